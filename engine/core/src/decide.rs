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
use crate::schedule::ScheduleVerdict;
use crate::snapshot::{CredentialKey, CredentialRow, DoorRow, Snapshot, secret_hash};
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
    ///
    /// With several of the person's groups on the door: any group that admits them
    /// grants (the lowest id is named), whatever the others say. Only when none admits
    /// them is the reason `Holiday`, as soon as one of them is closed only because of the
    /// holiday, even if the others are plainly closed; otherwise it is `OutsideSchedule`.
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
    /// Its owner, if it has one, whatever the outcome: a revoked, expired or blocked
    /// credential's decision names its owner too, so the entry reaches their history.
    pub person: Option<PersonId>,
}

/// Decide whether `presented` opens `door` at `at`, on `snapshot`.
///
/// Never fails and never panics: whatever the input, the answer is a decision with a
/// reason, and anything unrecognised is a deny.
///
/// `Decision::credential` names the credential whenever one was recognised, and
/// `Decision::person` its owner whenever it has one, whatever the outcome: a revoked
/// credential's decision names its owner too, so the entry reaches the owner's history.
#[must_use]
pub fn decide(snapshot: &Snapshot, door: DoorId, presented: Presented<'_>, at: Timestamp) -> Decision {
    let hash = secret_hash(presented.kind, presented.secret);
    let door_row = snapshot.doors.get(door.0);
    let credential = door_row.and_then(|d| find_credential(snapshot, d, presented, hash));
    finish(snapshot, door_row, credential, at)
}

/// One request of a batch: what [`decide`] takes, as one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionRequest<'a> {
    pub door: DoorId,
    /// What its reader presented.
    pub presented: Presented<'a>,
    /// When.
    pub at: Timestamp,
}

/// How many requests of a batch have their memory reads overlapped.
const LANES: usize = 8;

/// Decide every request of `requests` on one snapshot, appending the decisions to `out`
/// in the same order. Each decision is exactly what [`decide`] answers for the same
/// request.
///
/// It is faster per decision than calling [`decide`] in a loop when the data is not in
/// cache (IQ frames, `/v1/decide` batches at a large site): requests are taken eight at a
/// time, and the reads each needs (the door's row and the index bucket, then the
/// credential's and the person's rows) are issued for all eight before any is waited
/// for, so their cache misses overlap instead of following one another. `out` is only
/// appended to: reuse it across batches and nothing is allocated.
pub fn decide_batch(snapshot: &Snapshot, requests: &[DecisionRequest<'_>], out: &mut Vec<Decision>) {
    out.reserve(requests.len());
    for chunk in requests.chunks(LANES) {
        let mut hashes = [0u64; LANES];
        let mut sink = 0u64;
        // The door rows and index buckets: independent reads, all in flight at once.
        for (hash, r) in hashes.iter_mut().zip(chunk) {
            *hash = secret_hash(r.presented.kind, r.presented.secret);
            sink ^= u64::from(snapshot.touch_credential(*hash));
            if let Some(door) = snapshot.doors.get(r.door.0) {
                sink ^= u64::from(door.site.0);
            }
        }
        // The credential rows, and then each owner's row.
        let mut doors: [Option<&DoorRow>; LANES] = [None; LANES];
        let mut credentials: [Option<&CredentialRow>; LANES] = [None; LANES];
        for (((door, credential), hash), r) in doors.iter_mut().zip(&mut credentials).zip(&hashes).zip(chunk) {
            *door = snapshot.doors.get(r.door.0);
            *credential = door.and_then(|d| find_credential(snapshot, d, r.presented, *hash));
            if let Some(owner) = credential.and_then(CredentialRow::owner)
                && let Some(person) = snapshot.people.get(owner.0)
            {
                sink ^= u64::from(person.role.0);
            }
        }
        std::hint::black_box(sink);
        for ((door, credential), r) in doors.iter().zip(&credentials).zip(chunk) {
            out.push(finish(snapshot, *door, *credential, r.at));
        }
    }
}

#[inline]
pub(crate) fn find_credential<'s>(
    snapshot: &'s Snapshot,
    door: &DoorRow,
    presented: Presented<'_>,
    hash: u64,
) -> Option<&'s CredentialRow> {
    let key = CredentialKey::new(presented.kind, door.site, presented.secret)?;
    snapshot.credential_hashed(&key, hash)
}

#[inline]
fn finish(snapshot: &Snapshot, door: Option<&DoorRow>, credential: Option<&CredentialRow>, at: Timestamp) -> Decision {
    let mut decision = Decision {
        effect: Effect::Deny,
        reason: Reason::UnknownDoor,
        revision: snapshot.revision,
        credential: None,
        person: None,
    };
    let reason = match door {
        None => Reason::UnknownDoor,
        Some(door) => match credential {
            None => Reason::UnknownCredential,
            Some(credential) => evaluate(snapshot, door, credential, at, &mut decision),
        },
    };
    decision.reason = reason;
    decision.effect = reason.effect();
    decision
}

fn evaluate(
    snapshot: &Snapshot,
    door: &DoorRow,
    credential: &CredentialRow,
    at: Timestamp,
    out: &mut Decision,
) -> Reason {
    out.credential = Some(CredentialId(credential.id));
    let owner = credential
        .owner()
        .and_then(|id| snapshot.people.get(id.0).map(|row| (id, row)));
    out.person = owner.map(|(id, _)| id);
    if snapshot.revoked.contains(credential.id) {
        return Reason::CredentialRevoked;
    }
    let Some((person_id, person)) = owner else {
        return Reason::UnassignedCredential;
    };
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
    let mut local_moment =
        || *local.get_or_insert_with(|| site.clock.local(at, site.calendar.and_then(|c| snapshot.calendar(c))));
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
