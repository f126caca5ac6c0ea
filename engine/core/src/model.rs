//! The records a snapshot is built from: sites, IQs, doors, people, credentials, access
//! groups, schedules, holiday calendars and the role flags the core needs.
//!
//! These are plain data. The store produces them, [`crate::Snapshot::build`] indexes them,
//! and [`crate::Snapshot::records`] gives them back.

use crate::ids::{CalendarId, CredentialId, DoorId, GroupId, IqId, PersonId, RoleId, ScheduleId, SiteId};
use crate::schedule::{HolidayCalendar, Schedule};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// How many tags one IQ holds.
pub const IQ_MAX_TAGS: u32 = 10_000;
/// How many remote (app) users one IQ holds.
pub const IQ_MAX_REMOTE_USERS: u32 = 10_000;

/// A site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRecord {
    pub id: SiteId,
    /// The site's time zone; schedules are evaluated on its wall clock.
    pub time_zone: TimeZone,
    /// The holiday calendar its schedules honour, if any.
    pub holiday_calendar: Option<CalendarId>,
    /// Whole-site lockdown.
    pub lockdown: bool,
}

/// An IQ gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqRecord {
    pub id: IqId,
    /// The site it serves.
    pub site: SiteId,
}

/// How a door behaves before anyone's rights are looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DoorMode {
    /// Only people with a right at this moment may open it.
    #[default]
    Normal,
    /// Office mode set by hand: the door is open to everyone.
    Office,
    /// Office mode while the schedule is open, normal otherwise.
    OfficeScheduled(ScheduleId),
}

/// A door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorRecord {
    pub id: DoorId,
    /// The site it belongs to.
    pub site: SiteId,
    /// The IQ it is paired with, if any.
    pub iq: Option<IqId>,
    pub mode: DoorMode,
    /// Lockdown of this door alone.
    pub lockdown: bool,
}

/// A person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonRecord {
    /// Their id.
    pub id: PersonId,
    /// The site they belong to.
    pub site: SiteId,
    /// Their role.
    pub role: RoleId,
    /// Whether they are blocked.
    pub blocked: bool,
}

/// The kinds of credential, each with its own length rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialKind {
    /// An RFID tag; the secret is its UID, 4 to 10 bytes.
    Tag,
    /// A digital key on a phone; the secret is its id, 1 to 16 bytes.
    DigitalKey,
    /// A PIN; the secret is 4 to 8 ASCII digits.
    Pin,
}

impl CredentialKind {
    /// Every kind.
    pub const ALL: [CredentialKind; 3] = [CredentialKind::Tag, CredentialKind::DigitalKey, CredentialKind::Pin];

    /// The longest secret of any kind, in bytes.
    pub const MAX_SECRET_LEN: usize = 16;

    /// The accepted secret lengths, inclusive.
    #[must_use]
    pub const fn secret_len(self) -> (usize, usize) {
        match self {
            CredentialKind::Tag => (4, 10),
            CredentialKind::DigitalKey => (1, 16),
            CredentialKind::Pin => (4, 8),
        }
    }

    /// Whether `secret` is well formed for this kind.
    #[must_use]
    pub fn accepts(self, secret: &[u8]) -> bool {
        let (min, max) = self.secret_len();
        let len_ok = (min..=max).contains(&secret.len());
        match self {
            CredentialKind::Pin => len_ok && secret.iter().all(u8::is_ascii_digit),
            CredentialKind::Tag | CredentialKind::DigitalKey => len_ok,
        }
    }

    pub(crate) const fn tag_byte(self) -> u8 {
        match self {
            CredentialKind::Tag => 1,
            CredentialKind::DigitalKey => 2,
            CredentialKind::Pin => 3,
        }
    }

    pub(crate) const fn from_tag_byte(byte: u8) -> Option<CredentialKind> {
        match byte {
            1 => Some(CredentialKind::Tag),
            2 => Some(CredentialKind::DigitalKey),
            3 => Some(CredentialKind::Pin),
            _ => None,
        }
    }
}

/// A credential. It belongs to a site; its secret is unique per site and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    pub id: CredentialId,
    /// The site it works on.
    pub site: SiteId,
    pub kind: CredentialKind,
    /// What the reader sees: tag UID, key id or PIN digits.
    pub secret: Vec<u8>,
    /// Whom it belongs to; `None` for a tag that belongs to nobody yet.
    pub owner: Option<PersonId>,
    /// Not valid before this instant (inclusive).
    ///
    /// Validity is checked in whole seconds: both bounds and the decision's instant are
    /// floored to the second (towards the past, also before 1970), so a bound of
    /// `09:00:00.7` admits `09:00:00.1`, and [`crate::Snapshot::records`] gives the
    /// floored value back. A window that is empty or inverted (`valid_until` at or
    /// before `valid_from`) is accepted, not refused: such a credential is `NotYetValid`
    /// before `valid_from` and `Expired` from then on, so it never opens anything.
    pub valid_from: Option<Timestamp>,
    /// Not valid from this instant on (exclusive, floored to the second like
    /// `valid_from`).
    pub valid_until: Option<Timestamp>,
    /// Whether it goes into the offline lists of the doors it opens.
    pub offline_access: bool,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// An access group: its members may open its doors while its schedule is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    /// The site it belongs to.
    pub site: SiteId,
    /// The doors it opens.
    pub doors: Vec<DoorId>,
    /// When; `None` means at any time.
    pub schedule: Option<ScheduleId>,
    /// Who.
    pub members: Vec<PersonId>,
}

/// A named schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: ScheduleId,
    /// The site it belongs to.
    pub site: SiteId,
    pub schedule: Schedule,
}

/// A named holiday calendar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalendarRecord {
    pub id: CalendarId,
    /// The holidays.
    pub calendar: HolidayCalendar,
}

/// The facts about roles that the core needs. The rest of the role table (names,
/// capabilities) lives with the roles plugin and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleFlags {
    /// Roles whose holders still pass a door under lockdown.
    pub lockdown_exempt: Vec<RoleId>,
}

/// One record of the model, as streamed into [`crate::Snapshot::build`].
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A site.
    Site(SiteRecord),
    /// A holiday calendar.
    Calendar(CalendarRecord),
    /// An IQ.
    Iq(IqRecord),
    /// A door.
    Door(DoorRecord),
    /// A person.
    Person(PersonRecord),
    /// A credential.
    Credential(CredentialRecord),
    /// A schedule.
    Schedule(ScheduleRecord),
    /// An access group.
    Group(GroupRecord),
    /// The role flags; the last one given wins.
    Roles(RoleFlags),
}
