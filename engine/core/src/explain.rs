//! Why a decision went the way it did, check by check: the same checks as [`decide`], in
//! the same order, each with its outcome and what it looked at.
//!
//! This is a separate, read-only walk for people (`/v1/decide?explain=true`), so the hot
//! path stays as it is. Its final reason is [`decide`]'s for the same request, which the
//! tests check case by case; it allocates and is not meant to be fast.
//!
//! [`decide`]: crate::decide

use crate::decide::{Presented, Reason, find_credential};
use crate::ids::{CredentialId, DoorId};
use crate::model::DoorMode;
use crate::schedule::ScheduleVerdict;
use crate::snapshot::{Snapshot, secret_hash, whole_second};

use jiff::Timestamp;

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckOutcome {
    /// It passed; the next check runs.
    Passed,
    /// It failed: the decision is a deny, for this check's reason.
    Failed,
    /// It opened the door (office mode, or a group whose schedule is open).
    Opened,
    /// It does not apply here (office mode under lockdown, a normal door).
    NotApplicable,
    /// An earlier check decided; this one did not run.
    NotReached,
}

impl CheckOutcome {
    /// A stable snake_case code.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            CheckOutcome::Passed => "passed",
            CheckOutcome::Failed => "failed",
            CheckOutcome::Opened => "opened",
            CheckOutcome::NotApplicable => "not_applicable",
            CheckOutcome::NotReached => "not_reached",
        }
    }
}

/// One check of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Which check: `door`, `credential`, `revoked`, `owner`, `blocked`, `validity`,
    /// `lockdown`, `office_mode`, `rights`.
    pub name: &'static str,
    /// What it found.
    pub outcome: CheckOutcome,
    /// What it looked at, for people.
    pub detail: String,
}

/// Every check of a decision, in order, and the reason they come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The checks, in the order [`crate::decide`] runs them; those after the deciding one
    /// are [`CheckOutcome::NotReached`].
    pub checks: Vec<Check>,
    /// The reason they come to: [`crate::decide`]'s for the same request.
    pub reason: Reason,
}

/// The names of the checks, in order.
pub const CHECKS: [&str; 9] = [
    "door",
    "credential",
    "revoked",
    "owner",
    "blocked",
    "validity",
    "lockdown",
    "office_mode",
    "rights",
];

struct Trace {
    checks: Vec<Check>,
}

impl Trace {
    fn push(&mut self, name: &'static str, outcome: CheckOutcome, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            outcome,
            detail: detail.into(),
        });
    }

    fn end(mut self, reason: Reason) -> Explanation {
        let done = self.checks.len();
        for name in CHECKS.iter().skip(done) {
            self.push(name, CheckOutcome::NotReached, "");
        }
        Explanation {
            checks: self.checks,
            reason,
        }
    }
}

/// Explain whether `presented` opens `door` at `at` on `snapshot`: every check of
/// [`crate::decide`] with its outcome. Never fails and never panics.
#[must_use]
pub fn explain(snapshot: &Snapshot, door: DoorId, presented: Presented<'_>, at: Timestamp) -> Explanation {
    let mut t = Trace {
        checks: Vec::with_capacity(CHECKS.len()),
    };
    let Some(door_row) = snapshot.doors.get(door.0) else {
        t.push("door", CheckOutcome::Failed, format!("no `{door}`"));
        return t.end(Reason::UnknownDoor);
    };
    t.push("door", CheckOutcome::Passed, format!("`{door}` of `{}`", door_row.site));
    let hash = secret_hash(presented.kind, presented.secret);
    let Some(credential) = find_credential(snapshot, door_row, presented, hash) else {
        t.push(
            "credential",
            CheckOutcome::Failed,
            format!("no {:?} with these bytes on `{}`", presented.kind, door_row.site),
        );
        return t.end(Reason::UnknownCredential);
    };
    t.push(
        "credential",
        CheckOutcome::Passed,
        format!("`{}`", CredentialId(credential.id)),
    );
    if snapshot.revoked.contains(credential.id) {
        t.push("revoked", CheckOutcome::Failed, "the credential is revoked");
        return t.end(Reason::CredentialRevoked);
    }
    t.push("revoked", CheckOutcome::Passed, "not revoked");
    let owner = credential
        .owner()
        .and_then(|id| snapshot.people.get(id.0).map(|row| (id, row)));
    let Some((person_id, person)) = owner else {
        t.push("owner", CheckOutcome::Failed, "the credential belongs to nobody");
        return t.end(Reason::UnassignedCredential);
    };
    t.push("owner", CheckOutcome::Passed, format!("`{person_id}`"));
    if snapshot.blocked.contains(person_id.0) {
        t.push("blocked", CheckOutcome::Failed, format!("`{person_id}` is blocked"));
        return t.end(Reason::PersonBlocked);
    }
    t.push("blocked", CheckOutcome::Passed, "not blocked");
    let now = whole_second(at);
    if now < credential.valid_from {
        t.push(
            "validity",
            CheckOutcome::Failed,
            format!("valid from unix second {}", credential.valid_from),
        );
        return t.end(Reason::NotYetValid);
    }
    if now >= credential.valid_until {
        t.push(
            "validity",
            CheckOutcome::Failed,
            format!("valid until unix second {}", credential.valid_until),
        );
        return t.end(Reason::Expired);
    }
    t.push("validity", CheckOutcome::Passed, "within its validity");
    let Some(site) = snapshot.site(door_row.site) else {
        t.push("lockdown", CheckOutcome::Failed, "the door's site is gone");
        return t.end(Reason::UnknownDoor);
    };
    let local = site.clock.local(at, site.calendar.and_then(|c| snapshot.calendar(c)));
    let lockdown = door_row.lockdown || site.lockdown;
    let whose = if door_row.lockdown && site.lockdown {
        "the door and the site are"
    } else if door_row.lockdown {
        "the door is"
    } else {
        "the site is"
    };
    if lockdown {
        if !snapshot.is_lockdown_exempt(person.role) {
            t.push(
                "lockdown",
                CheckOutcome::Failed,
                format!("{whose} in lockdown and `{}` is not exempt", person.role),
            );
            return t.end(Reason::Lockdown);
        }
        t.push(
            "lockdown",
            CheckOutcome::Passed,
            format!("{whose} in lockdown; `{}` is exempt", person.role),
        );
        t.push(
            "office_mode",
            CheckOutcome::NotApplicable,
            "lockdown overrides office mode",
        );
    } else {
        t.push("lockdown", CheckOutcome::Passed, "no lockdown");
        match door_row.mode {
            DoorMode::Normal => t.push("office_mode", CheckOutcome::NotApplicable, "normal mode"),
            DoorMode::Office => {
                t.push("office_mode", CheckOutcome::Opened, "office mode, set by hand");
                return t.end(Reason::OfficeMode);
            }
            DoorMode::OfficeScheduled(s) => {
                let open = snapshot
                    .schedule(s)
                    .is_some_and(|row| row.schedule.verdict(&local) == ScheduleVerdict::Open);
                if open {
                    t.push(
                        "office_mode",
                        CheckOutcome::Opened,
                        format!("office mode while `{s}` is open"),
                    );
                    return t.end(Reason::OfficeMode);
                }
                t.push(
                    "office_mode",
                    CheckOutcome::Passed,
                    format!("office mode while `{s}` is open; it is closed"),
                );
            }
        }
    }
    let mut has_right = false;
    let mut holiday = false;
    let mut looked = Vec::new();
    for &group_id in door_row.groups.as_slice() {
        if !person.groups.contains(group_id) {
            continue;
        }
        let Some(group) = snapshot.group(group_id) else {
            continue;
        };
        has_right = true;
        let Some(schedule_id) = group.schedule else {
            t.push(
                "rights",
                CheckOutcome::Opened,
                format!("`{group_id}` opens it at any time"),
            );
            return t.end(Reason::Granted {
                group: group_id,
                schedule: None,
            });
        };
        let Some(schedule) = snapshot.schedule(schedule_id) else {
            continue;
        };
        match schedule.schedule.verdict(&local) {
            ScheduleVerdict::Open => {
                t.push(
                    "rights",
                    CheckOutcome::Opened,
                    format!("`{group_id}` opens it within `{schedule_id}`, open now"),
                );
                return t.end(Reason::Granted {
                    group: group_id,
                    schedule: Some(schedule_id),
                });
            }
            ScheduleVerdict::ClosedForHoliday => {
                holiday = true;
                looked.push(format!("`{group_id}` within `{schedule_id}`: closed for a holiday"));
            }
            ScheduleVerdict::Closed => looked.push(format!("`{group_id}` within `{schedule_id}`: closed")),
        }
    }
    let reason = if !has_right {
        Reason::NoRight
    } else if holiday {
        Reason::Holiday
    } else {
        Reason::OutsideSchedule
    };
    let detail = if has_right {
        looked.join("; ")
    } else {
        format!("none of `{person_id}`'s groups opens `{door}`")
    };
    t.push("rights", CheckOutcome::Failed, detail);
    t.end(reason)
}
