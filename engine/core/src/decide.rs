//! The decision: may this credential open this door now, and why.
//!
//! The checks run in a fixed order, and the first that fails names the reason:
//! 1. the door exists;
//! 2. the credential is known on the door's site, and not revoked;
//! 3. it belongs to someone, who is not blocked;
//! 4. it is within its validity window;
//! 5. lockdown (the door's or the site's) stops everyone whose role is not exempt;
//! 6. office mode opens the door to every valid credential (not under lockdown);
//! 7. a group of the person opens the door, and its schedule is open now.
//!
//! Credential checks come before door modes so that a blocked person at an open door is
//! still logged as denied: the entry says what the system thought of them.

use crate::ids::{CredentialId, DoorId, GroupId, PersonId, Revision, ScheduleId};
use crate::model::{CredentialKind, DoorMode};
use crate::schedule::{LocalMoment, ScheduleVerdict};
use crate::snapshot::{CredentialKey, Snapshot};
use jiff::Timestamp;
use std::fmt;

/// What a reader presented at a door.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    /// The kind the reader says it read.
    pub kind: CredentialKind,
    /// The raw bytes: tag UID, key id or PIN digits. Any length is accepted here.
    pub secret: &'a [u8],
}

impl<'a> Presented<'a> {
    /// A tag UID.
    #[must_use]
    pub const fn tag(uid: &'a [u8]) -> Self {
        Presented {
            kind: CredentialKind::Tag,
            secret: uid,
        }
    }

    /// A digital key id.
    #[must_use]
    pub const fn digital_key(id: &'a [u8]) -> Self {
        Presented {
            kind: CredentialKind::DigitalKey,
            secret: id,
        }
    }

    /// PIN digits.
    #[must_use]
    pub const fn pin(digits: &'a [u8]) -> Self {
        Presented {
            kind: CredentialKind::Pin,
            secret: digits,
        }
    }
}

/// Open, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// The door opens.
    Allow,
    /// The door stays shut.
    Deny,
}

/// Why a decision went the way it did. Every path through [`decide`] has its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A group of the person opens the door and its schedule is open.
    Granted {
        /// The first group, by id, that admitted the person.
        group: GroupId,
        /// Its schedule; `None` for a group open at any time.
        schedule: Option<ScheduleId>,
    },
    /// The door is in office mode.
    OfficeMode,
    /// No such door.
    UnknownDoor,
    /// No credential with these bytes on the door's site.
    UnknownCredential,
    /// The credential belongs to nobody yet.
    UnassignedCredential,
    /// The credential's owner is blocked.
    PersonBlocked,
    /// The credential was revoked.
    CredentialRevoked,
    /// The credential's validity has not started.
    NotYetValid,
    /// The credential's validity has ended.
    Expired,
    /// None of the person's groups opens this door.
    NoRight,
    /// The person has a right on this door, but no schedule of theirs is open now.
    OutsideSchedule,
    /// A schedule of the person's would be open now, but today is a holiday.
    Holiday,
    /// The door or its site is in lockdown, and the person's role is not exempt.
    Lockdown,
}

impl Reason {
    /// The effect this reason implies.
    #[must_use]
    pub const fn effect(self) -> Effect {
        match self {
            Reason::Granted { .. } | Reason::OfficeMode => Effect::Allow,
            _ => Effect::Deny,
        }
    }

    /// A stable snake_case code, for logs and wire formats.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Reason::Granted { .. } => "granted",
            Reason::OfficeMode => "office_mode",
            Reason::UnknownDoor => "unknown_door",
            Reason::UnknownCredential => "unknown_credential",
            Reason::UnassignedCredential => "unassigned_credential",
            Reason::PersonBlocked => "person_blocked",
            Reason::CredentialRevoked => "credential_revoked",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::NoRight => "no_right",
            Reason::OutsideSchedule => "outside_schedule",
            Reason::Holiday => "holiday",
            Reason::Lockdown => "lockdown",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Granted {
                group,
                schedule: Some(s),
            } => write!(f, "granted by `{group}` within `{s}`"),
            Reason::Granted { group, schedule: None } => write!(f, "granted by `{group}` at any time"),
            other => f.write_str(other.code()),
        }
    }
}

/// The answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Open or not.
    pub effect: Effect,
    /// Why.
    pub reason: Reason,
    /// The revision of the snapshot that decided.
    pub revision: Revision,
    /// The credential that was recognised, if any.
    pub credential: Option<CredentialId>,
    /// Its owner, if any.
    pub person: Option<PersonId>,
}

/// Decide whether `presented` opens `door` at `at`, on `snapshot`.
///
/// Never fails and never panics: whatever the input, the answer is a decision with a
/// reason, and anything unrecognised is a deny.
#[must_use]
pub fn decide(snapshot: &Snapshot, door: DoorId, presented: Presented<'_>, at: Timestamp) -> Decision {
    let mut decision = Decision {
        effect: Effect::Deny,
        reason: Reason::UnknownDoor,
        revision: snapshot.revision,
        credential: None,
        person: None,
    };
    let reason = evaluate(snapshot, door, presented, at, &mut decision);
    decision.reason = reason;
    decision.effect = reason.effect();
    decision
}

fn evaluate(
    snapshot: &Snapshot,
    door_id: DoorId,
    presented: Presented<'_>,
    at: Timestamp,
    out: &mut Decision,
) -> Reason {
    let Some(door) = snapshot.doors.get(door_id.0) else {
        return Reason::UnknownDoor;
    };
    let Some(key) = CredentialKey::new(presented.kind, door.site, presented.secret) else {
        return Reason::UnknownCredential;
    };
    let Some(credential) = snapshot.credential(&key) else {
        return Reason::UnknownCredential;
    };
    out.credential = Some(CredentialId(credential.id));
    if snapshot.revoked.contains(credential.id) {
        return Reason::CredentialRevoked;
    }
    let Some(person_id) = credential.owner() else {
        return Reason::UnassignedCredential;
    };
    let Some(person) = snapshot.people.get(person_id.0) else {
        return Reason::UnassignedCredential;
    };
    out.person = Some(person_id);
    if snapshot.blocked.contains(person_id.0) {
        return Reason::PersonBlocked;
    }
    let now = crate::snapshot::whole_second(at);
    if now < credential.valid_from {
        return Reason::NotYetValid;
    }
    if now >= credential.valid_until {
        return Reason::Expired;
    }
    let Some(site) = snapshot.site(door.site) else {
        return Reason::UnknownDoor;
    };
    let mut local = None;
    let mut local_moment = || {
        *local.get_or_insert_with(|| {
            LocalMoment::new(at, &site.time_zone, site.calendar.and_then(|c| snapshot.calendar(c)))
        })
    };
    let lockdown = door.lockdown || site.lockdown;
    if lockdown {
        if !snapshot.is_lockdown_exempt(person.role) {
            return Reason::Lockdown;
        }
    } else {
        match door.mode {
            DoorMode::Normal => {}
            DoorMode::Office => return Reason::OfficeMode,
            DoorMode::OfficeScheduled(s) => {
                if snapshot
                    .schedule(s)
                    .is_some_and(|row| row.schedule.verdict(&local_moment()) == ScheduleVerdict::Open)
                {
                    return Reason::OfficeMode;
                }
            }
        }
    }
    let mut has_right = false;
    let mut holiday = false;
    for &group_id in door.groups.as_slice() {
        if !person.groups.contains(group_id) {
            continue;
        }
        let Some(group) = snapshot.group(group_id) else {
            continue;
        };
        has_right = true;
        let Some(schedule_id) = group.schedule else {
            return Reason::Granted {
                group: group_id,
                schedule: None,
            };
        };
        let Some(schedule) = snapshot.schedule(schedule_id) else {
            continue;
        };
        match schedule.schedule.verdict(&local_moment()) {
            ScheduleVerdict::Open => {
                return Reason::Granted {
                    group: group_id,
                    schedule: Some(schedule_id),
                };
            }
            ScheduleVerdict::ClosedForHoliday => holiday = true,
            ScheduleVerdict::Closed => {}
        }
    }
    if !has_right {
        Reason::NoRight
    } else if holiday {
        Reason::Holiday
    } else {
        Reason::OutsideSchedule
    }
}
