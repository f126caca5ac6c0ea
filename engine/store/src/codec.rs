//! The store's own encoding of the core's [`Change`] and [`Record`]s, as versioned JSON.
//!
//! The core has no serde, so this module mirrors its types with DTOs. A `change_log` row
//! holds one [`Logged`] entry as `{"v":1,"op":...}`; audit rows hold records the same
//! way. The version lets a later schema read older rows. Decoding re-validates what the
//! core validates (schedules, time zones), so a damaged row is an error, not a panic.

use crate::error::StoreError;
use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use keyway_core::{
    CalendarId, CalendarRecord, Change, CredentialId, CredentialKind, CredentialRecord, DateRange, DaySet, DoorId,
    DoorMode, DoorRecord, GroupId, GroupRecord, HolidayCalendar, IqId, IqRecord, Period, PersonId, PersonRecord,
    Record, RoleFlags, RoleId, Schedule, ScheduleId, ScheduleRecord, SiteId, SiteRecord,
};
use serde::{Deserialize, Serialize};

/// The encoding version written by this build.
pub const VERSION: u32 = 1;

/// One change-log entry: a change of the model, or "reload everything" after a bulk import.
#[derive(Clone, Debug, PartialEq)]
pub enum Logged {
    /// One change, applied incrementally by followers.
    Change(Change),
    /// The model was replaced in bulk; followers rebuild their snapshot from the tables.
    Reload,
    /// A change of policy: not part of the decision model, but every node's plugin host
    /// must hear of it in the same order as the model's changes.
    Policy(PolicyChange),
}

/// A change of policy, as the change log carries it to every node.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyChange {
    /// Bundle `bundle` became the one in force (for `site`, or globally).
    BundleActivated {
        /// The stored bundle's id.
        bundle: crate::BundleId,
        /// Its site; `None` for the global bundle.
        site: Option<SiteId>,
    },
    /// `door`'s chain of rules was set, or detached (an empty chain).
    DoorRule {
        door: DoorId,
        /// Its rules, in order; empty when detached.
        rules: Vec<crate::policy::ChainedRule>,
    },
    /// `site`'s opening hours were set or cleared.
    OpeningHours {
        site: SiteId,
        /// The hours; `None` when cleared.
        hours: Option<Schedule>,
    },
    /// An admin reset the state door rule `rule` keeps for one person, door or site of
    /// `site` (every node forgets it).
    RuleStateReset {
        /// The rule's name.
        rule: String,
        /// The site whose person, door or own state it was.
        site: SiteId,
        /// Whose state.
        scope: RuleScope,
    },
}

/// Whose state a door rule keeps: a person's, a door's or a site's (the plugin host's
/// `StateScope`, which the store does not depend on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleScope {
    /// Per (rule, person).
    Person(PersonId),
    /// Per (rule, door).
    Door(DoorId),
    /// Per (rule, site).
    Site(SiteId),
}

impl RuleScope {
    /// `person`, `door` or `site`.
    #[must_use]
    pub const fn kind(self) -> &'static str {
        match self {
            RuleScope::Person(_) => "person",
            RuleScope::Door(_) => "door",
            RuleScope::Site(_) => "site",
        }
    }

    /// The person's, door's or site's id.
    #[must_use]
    pub const fn id(self) -> u32 {
        match self {
            RuleScope::Person(p) => p.0,
            RuleScope::Door(d) => d.0,
            RuleScope::Site(s) => s.0,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    #[serde(flatten)]
    op: Op,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ModeDto {
    Normal,
    Office,
    OfficeScheduled(u32),
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct SiteDto {
    pub id: u32,
    pub time_zone: String,
    pub holiday_calendar: Option<u32>,
    pub lockdown: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct CalendarDto {
    pub id: u32,
    pub dates: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct IqDto {
    pub id: u32,
    pub site: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct DoorDto {
    pub id: u32,
    pub site: u32,
    pub iq: Option<u32>,
    pub mode: ModeDto,
    pub lockdown: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct PersonDto {
    pub id: u32,
    pub site: u32,
    pub role: u16,
    pub blocked: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct CredentialDto {
    pub id: u32,
    pub site: u32,
    pub kind: u8,
    pub secret: Vec<u8>,
    pub owner: Option<u32>,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub offline_access: bool,
    pub revoked: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeriodDto {
    pub days: u8,
    pub start: u16,
    pub end: u16,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct ScheduleDto {
    pub id: u32,
    pub site: u32,
    pub periods: Vec<PeriodDto>,
    pub date_first: Option<String>,
    pub date_last: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct GroupDto {
    pub id: u32,
    pub site: u32,
    pub doors: Vec<u32>,
    pub schedule: Option<u32>,
    pub members: Vec<u32>,
}

/// One rule of a door's chain in the change log.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct ChainedRuleDto {
    rule: String,
    fail_safe: bool,
    #[serde(default)]
    config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    BlockPerson {
        person: u32,
    },
    UnblockPerson {
        person: u32,
    },
    RevokeCredential {
        credential: u32,
    },
    RestoreCredential {
        credential: u32,
    },
    PutCredential(CredentialDto),
    RemoveCredential {
        credential: u32,
    },
    Grant {
        person: u32,
        group: u32,
    },
    Ungrant {
        person: u32,
        group: u32,
    },
    PutPerson(PersonDto),
    RemovePerson {
        person: u32,
    },
    PutDoor(DoorDto),
    RemoveDoor {
        door: u32,
    },
    SetDoorMode {
        door: u32,
        mode: ModeDto,
    },
    SetDoorLockdown {
        door: u32,
        on: bool,
    },
    SetSiteLockdown {
        site: u32,
        on: bool,
    },
    PutGroup(GroupDto),
    RemoveGroup {
        group: u32,
    },
    PutSchedule(ScheduleDto),
    RemoveSchedule {
        schedule: u32,
    },
    PutIq(IqDto),
    RemoveIq {
        iq: u32,
    },
    PutSite(SiteDto),
    PutCalendar(CalendarDto),
    SetRoles {
        lockdown_exempt: Vec<u16>,
    },
    Reload,
    BundleActivated {
        bundle: i64,
        site: Option<u32>,
    },
    /// A door's one rule, as written before chains: still decoded, never written.
    DoorRule {
        door: u32,
        rule: Option<String>,
        fail_safe: bool,
    },
    DoorRules {
        door: u32,
        rules: Vec<ChainedRuleDto>,
    },
    OpeningHours {
        site: u32,
        hours: Option<ScheduleDto>,
    },
    RuleStateReset {
        rule: String,
        site: u32,
        scope: String,
        id: u32,
    },
}

/// Encode one change-log entry.
///
/// # Errors
/// [`StoreError::Invalid`] if a site's time zone has no IANA name (it could not be stored).
pub fn encode(entry: &Logged) -> Result<String, StoreError> {
    let op = match entry {
        Logged::Reload => Op::Reload,
        Logged::Change(change) => change_op(change)?,
        Logged::Policy(policy) => policy_op(policy),
    };
    serde_json::to_string(&Envelope { v: VERSION, op }).map_err(StoreError::internal)
}

fn policy_op(policy: &PolicyChange) -> Op {
    match policy {
        PolicyChange::BundleActivated { bundle, site } => Op::BundleActivated {
            bundle: bundle.get(),
            site: site.map(|s| s.0),
        },
        PolicyChange::DoorRule { door, rules } => Op::DoorRules {
            door: door.0,
            rules: rules
                .iter()
                .map(|r| ChainedRuleDto {
                    rule: r.rule.clone(),
                    fail_safe: r.fail_safe,
                    config: r.config.clone(),
                })
                .collect(),
        },
        PolicyChange::RuleStateReset { rule, site, scope } => Op::RuleStateReset {
            rule: rule.clone(),
            site: site.0,
            scope: scope.kind().to_owned(),
            id: scope.id(),
        },
        PolicyChange::OpeningHours { site, hours } => Op::OpeningHours {
            site: site.0,
            hours: hours.as_ref().map(|schedule| {
                schedule_dto(&ScheduleRecord {
                    id: ScheduleId(0),
                    site: *site,
                    schedule: schedule.clone(),
                })
            }),
        },
    }
}

fn change_op(change: &Change) -> Result<Op, StoreError> {
    Ok(match change {
        Change::BlockPerson(p) => Op::BlockPerson { person: p.0 },
        Change::UnblockPerson(p) => Op::UnblockPerson { person: p.0 },
        Change::RevokeCredential(c) => Op::RevokeCredential { credential: c.0 },
        Change::RestoreCredential(c) => Op::RestoreCredential { credential: c.0 },
        Change::PutCredential(r) => Op::PutCredential(credential_dto(r)),
        Change::RemoveCredential(c) => Op::RemoveCredential { credential: c.0 },
        Change::Grant { person, group } => Op::Grant {
            person: person.0,
            group: group.0,
        },
        Change::Ungrant { person, group } => Op::Ungrant {
            person: person.0,
            group: group.0,
        },
        Change::PutPerson(r) => Op::PutPerson(person_dto(r)),
        Change::RemovePerson(p) => Op::RemovePerson { person: p.0 },
        Change::PutDoor(r) => Op::PutDoor(door_dto(r)),
        Change::RemoveDoor(d) => Op::RemoveDoor { door: d.0 },
        Change::SetDoorMode { door, mode } => Op::SetDoorMode {
            door: door.0,
            mode: mode_dto(*mode),
        },
        Change::SetDoorLockdown { door, on } => Op::SetDoorLockdown { door: door.0, on: *on },
        Change::SetSiteLockdown { site, on } => Op::SetSiteLockdown { site: site.0, on: *on },
        Change::PutGroup(r) => Op::PutGroup(group_dto(r)),
        Change::RemoveGroup(g) => Op::RemoveGroup { group: g.0 },
        Change::PutSchedule(r) => Op::PutSchedule(schedule_dto(r)),
        Change::RemoveSchedule(s) => Op::RemoveSchedule { schedule: s.0 },
        Change::PutIq(r) => Op::PutIq(IqDto {
            id: r.id.0,
            site: r.site.0,
        }),
        Change::RemoveIq(iq) => Op::RemoveIq { iq: iq.0 },
        Change::PutSite(r) => Op::PutSite(site_dto(r)?),
        Change::PutCalendar(r) => Op::PutCalendar(calendar_dto(r)),
        Change::SetRoles(flags) => Op::SetRoles {
            lockdown_exempt: flags.lockdown_exempt.iter().map(|r| r.0).collect(),
        },
    })
}

/// Decode one change-log entry.
///
/// # Errors
/// [`StoreError::Internal`] if the text is not an entry this build understands.
pub fn decode(text: &str) -> Result<Logged, StoreError> {
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| StoreError::internal(format!("undecodable change-log entry: {e}")))?;
    if envelope.v != VERSION {
        return Err(StoreError::internal(format!(
            "change-log entry of version {} (this build reads {VERSION})",
            envelope.v
        )));
    }
    let change = match envelope.op {
        Op::Reload => return Ok(Logged::Reload),
        Op::BundleActivated { bundle, site } => {
            return Ok(Logged::Policy(PolicyChange::BundleActivated {
                bundle: crate::BundleId(bundle),
                site: site.map(SiteId),
            }));
        }
        Op::DoorRule { door, rule, fail_safe } => {
            return Ok(Logged::Policy(PolicyChange::DoorRule {
                door: DoorId(door),
                rules: rule
                    .map(|name| crate::policy::ChainedRule::new(name, fail_safe))
                    .into_iter()
                    .collect(),
            }));
        }
        Op::DoorRules { door, rules } => {
            return Ok(Logged::Policy(PolicyChange::DoorRule {
                door: DoorId(door),
                rules: rules
                    .into_iter()
                    .map(|r| crate::policy::ChainedRule {
                        rule: r.rule,
                        fail_safe: r.fail_safe,
                        config: r.config,
                    })
                    .collect(),
            }));
        }
        Op::RuleStateReset { rule, site, scope, id } => {
            let scope = match scope.as_str() {
                "person" => RuleScope::Person(PersonId(id)),
                "door" => RuleScope::Door(DoorId(id)),
                "site" => RuleScope::Site(SiteId(id)),
                other => {
                    return Err(StoreError::internal(format!(
                        "change-log entry resets a rule state of scope `{other}`"
                    )));
                }
            };
            return Ok(Logged::Policy(PolicyChange::RuleStateReset {
                rule,
                site: SiteId(site),
                scope,
            }));
        }
        Op::OpeningHours { site, hours } => {
            return Ok(Logged::Policy(PolicyChange::OpeningHours {
                site: SiteId(site),
                hours: hours.map(|d| schedule_record(&d).map(|r| r.schedule)).transpose()?,
            }));
        }
        Op::BlockPerson { person } => Change::BlockPerson(PersonId(person)),
        Op::UnblockPerson { person } => Change::UnblockPerson(PersonId(person)),
        Op::RevokeCredential { credential } => Change::RevokeCredential(CredentialId(credential)),
        Op::RestoreCredential { credential } => Change::RestoreCredential(CredentialId(credential)),
        Op::PutCredential(d) => Change::PutCredential(credential_record(d)?),
        Op::RemoveCredential { credential } => Change::RemoveCredential(CredentialId(credential)),
        Op::Grant { person, group } => Change::Grant {
            person: PersonId(person),
            group: GroupId(group),
        },
        Op::Ungrant { person, group } => Change::Ungrant {
            person: PersonId(person),
            group: GroupId(group),
        },
        Op::PutPerson(d) => Change::PutPerson(person_record(&d)),
        Op::RemovePerson { person } => Change::RemovePerson(PersonId(person)),
        Op::PutDoor(d) => Change::PutDoor(door_record(&d)),
        Op::RemoveDoor { door } => Change::RemoveDoor(DoorId(door)),
        Op::SetDoorMode { door, mode } => Change::SetDoorMode {
            door: DoorId(door),
            mode: door_mode(mode),
        },
        Op::SetDoorLockdown { door, on } => Change::SetDoorLockdown { door: DoorId(door), on },
        Op::SetSiteLockdown { site, on } => Change::SetSiteLockdown { site: SiteId(site), on },
        Op::PutGroup(d) => Change::PutGroup(group_record(d)),
        Op::RemoveGroup { group } => Change::RemoveGroup(GroupId(group)),
        Op::PutSchedule(d) => Change::PutSchedule(schedule_record(&d)?),
        Op::RemoveSchedule { schedule } => Change::RemoveSchedule(ScheduleId(schedule)),
        Op::PutIq(d) => Change::PutIq(IqRecord {
            id: IqId(d.id),
            site: SiteId(d.site),
        }),
        Op::RemoveIq { iq } => Change::RemoveIq(IqId(iq)),
        Op::PutSite(d) => Change::PutSite(site_record(&d)?),
        Op::PutCalendar(d) => Change::PutCalendar(calendar_record(&d)?),
        Op::SetRoles { lockdown_exempt } => Change::SetRoles(RoleFlags {
            lockdown_exempt: lockdown_exempt.into_iter().map(RoleId).collect(),
        }),
    };
    Ok(Logged::Change(change))
}

/// A record as JSON, for the audit log's before and after.
pub(crate) fn record_json(record: &Record) -> Result<String, StoreError> {
    let value = match record {
        Record::Site(r) => serde_json::to_value(site_dto(r)?),
        Record::Calendar(r) => serde_json::to_value(calendar_dto(r)),
        Record::Iq(r) => serde_json::to_value(IqDto {
            id: r.id.0,
            site: r.site.0,
        }),
        Record::Door(r) => serde_json::to_value(door_dto(r)),
        Record::Person(r) => serde_json::to_value(person_dto(r)),
        Record::Credential(r) => serde_json::to_value(credential_dto(r)),
        Record::Schedule(r) => serde_json::to_value(schedule_dto(r)),
        Record::Group(r) => serde_json::to_value(group_dto(r)),
        Record::Roles(r) => serde_json::to_value(r.lockdown_exempt.iter().map(|r| r.0).collect::<Vec<_>>()),
    };
    value.map(|v| v.to_string()).map_err(StoreError::internal)
}

pub(crate) fn mode_dto(mode: DoorMode) -> ModeDto {
    match mode {
        DoorMode::Normal => ModeDto::Normal,
        DoorMode::Office => ModeDto::Office,
        DoorMode::OfficeScheduled(s) => ModeDto::OfficeScheduled(s.0),
    }
}

pub(crate) fn door_mode(mode: ModeDto) -> DoorMode {
    match mode {
        ModeDto::Normal => DoorMode::Normal,
        ModeDto::Office => DoorMode::Office,
        ModeDto::OfficeScheduled(s) => DoorMode::OfficeScheduled(ScheduleId(s)),
    }
}

pub(crate) fn site_dto(r: &SiteRecord) -> Result<SiteDto, StoreError> {
    Ok(SiteDto {
        id: r.id.0,
        time_zone: zone_name(&r.time_zone)?,
        holiday_calendar: r.holiday_calendar.map(|c| c.0),
        lockdown: r.lockdown,
    })
}

pub(crate) fn zone_name(zone: &TimeZone) -> Result<String, StoreError> {
    zone.iana_name()
        .map(str::to_owned)
        .ok_or_else(|| StoreError::invalid("a site's time zone must be an IANA zone such as `Europe/Madrid`"))
}

pub(crate) fn zone(name: &str) -> Result<TimeZone, StoreError> {
    TimeZone::get(name).map_err(|_| StoreError::invalid(format!("unknown time zone `{name}`")))
}

pub(crate) fn site_record(d: &SiteDto) -> Result<SiteRecord, StoreError> {
    Ok(SiteRecord {
        id: SiteId(d.id),
        time_zone: zone(&d.time_zone)?,
        holiday_calendar: d.holiday_calendar.map(CalendarId),
        lockdown: d.lockdown,
    })
}

pub(crate) fn calendar_dto(r: &CalendarRecord) -> CalendarDto {
    CalendarDto {
        id: r.id.0,
        dates: r.calendar.dates().iter().map(ToString::to_string).collect(),
    }
}

pub(crate) fn date(text: &str) -> Result<Date, StoreError> {
    text.parse()
        .map_err(|_| StoreError::invalid(format!("`{text}` is not a date")))
}

pub(crate) fn calendar_record(d: &CalendarDto) -> Result<CalendarRecord, StoreError> {
    let dates = d.dates.iter().map(|t| date(t)).collect::<Result<Vec<_>, _>>()?;
    Ok(CalendarRecord {
        id: CalendarId(d.id),
        calendar: HolidayCalendar::new(dates),
    })
}

pub(crate) fn door_dto(r: &DoorRecord) -> DoorDto {
    DoorDto {
        id: r.id.0,
        site: r.site.0,
        iq: r.iq.map(|i| i.0),
        mode: mode_dto(r.mode),
        lockdown: r.lockdown,
    }
}

pub(crate) fn door_record(d: &DoorDto) -> DoorRecord {
    DoorRecord {
        id: DoorId(d.id),
        site: SiteId(d.site),
        iq: d.iq.map(IqId),
        mode: door_mode(d.mode),
        lockdown: d.lockdown,
    }
}

pub(crate) fn person_dto(r: &PersonRecord) -> PersonDto {
    PersonDto {
        id: r.id.0,
        site: r.site.0,
        role: r.role.0,
        blocked: r.blocked,
    }
}

pub(crate) fn person_record(d: &PersonDto) -> PersonRecord {
    PersonRecord {
        id: PersonId(d.id),
        site: SiteId(d.site),
        role: RoleId(d.role),
        blocked: d.blocked,
    }
}

pub(crate) const fn kind_code(kind: CredentialKind) -> u8 {
    match kind {
        CredentialKind::Tag => 1,
        CredentialKind::DigitalKey => 2,
        CredentialKind::Pin => 3,
    }
}

pub(crate) fn kind_from_code(code: i64) -> Result<CredentialKind, StoreError> {
    match code {
        1 => Ok(CredentialKind::Tag),
        2 => Ok(CredentialKind::DigitalKey),
        3 => Ok(CredentialKind::Pin),
        other => Err(StoreError::internal(format!("unknown credential kind `{other}`"))),
    }
}

/// A stored integer as a `u32` (ids, counts): out of range means the row was not
/// written by Keyway.
pub(crate) fn id32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::internal(format!("{what} `{v}` out of range")))
}

/// [`id32`] of a nullable column.
pub(crate) fn opt_id32(v: Option<i64>, what: &str) -> Result<Option<u32>, StoreError> {
    v.map(|v| id32(v, what)).transpose()
}

pub(crate) fn timestamp(seconds: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_second(seconds).map_err(|_| StoreError::invalid(format!("`{seconds}` is not a valid time")))
}

pub(crate) fn credential_dto(r: &CredentialRecord) -> CredentialDto {
    CredentialDto {
        id: r.id.0,
        site: r.site.0,
        kind: kind_code(r.kind),
        secret: r.secret.clone(),
        owner: r.owner.map(|p| p.0),
        valid_from: r.valid_from.map(Timestamp::as_second),
        valid_until: r.valid_until.map(Timestamp::as_second),
        offline_access: r.offline_access,
        revoked: r.revoked,
    }
}

pub(crate) fn credential_record(d: CredentialDto) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        id: CredentialId(d.id),
        site: SiteId(d.site),
        kind: kind_from_code(i64::from(d.kind))?,
        secret: d.secret,
        owner: d.owner.map(PersonId),
        valid_from: d.valid_from.map(timestamp).transpose()?,
        valid_until: d.valid_until.map(timestamp).transpose()?,
        offline_access: d.offline_access,
        revoked: d.revoked,
    })
}

pub(crate) fn periods_dto(schedule: &Schedule) -> Vec<PeriodDto> {
    schedule
        .periods()
        .iter()
        .map(|p| PeriodDto {
            days: p.days.bits(),
            start: p.start,
            end: p.end,
        })
        .collect()
}

pub(crate) fn schedule_dto(r: &ScheduleRecord) -> ScheduleDto {
    let range = r.schedule.date_range();
    ScheduleDto {
        id: r.id.0,
        site: r.site.0,
        periods: periods_dto(&r.schedule),
        date_first: range.map(|d| d.first.to_string()),
        date_last: range.map(|d| d.last.to_string()),
    }
}

pub(crate) fn schedule(periods: &[PeriodDto], first: Option<&str>, last: Option<&str>) -> Result<Schedule, StoreError> {
    let periods = periods
        .iter()
        .map(|p| Period {
            days: DaySet::from_bits(p.days),
            start: p.start,
            end: p.end,
        })
        .collect();
    let range = match (first, last) {
        (Some(first), Some(last)) => Some(DateRange {
            first: date(first)?,
            last: date(last)?,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreError::invalid(
                "a date range needs both its first and its last day",
            ));
        }
    };
    Schedule::new(periods, range).map_err(StoreError::invalid)
}

pub(crate) fn schedule_record(d: &ScheduleDto) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        id: ScheduleId(d.id),
        site: SiteId(d.site),
        schedule: schedule(&d.periods, d.date_first.as_deref(), d.date_last.as_deref())?,
    })
}

pub(crate) fn group_dto(r: &GroupRecord) -> GroupDto {
    GroupDto {
        id: r.id.0,
        site: r.site.0,
        doors: r.doors.iter().map(|d| d.0).collect(),
        schedule: r.schedule.map(|s| s.0),
        members: r.members.iter().map(|p| p.0).collect(),
    }
}

pub(crate) fn group_record(d: GroupDto) -> GroupRecord {
    GroupRecord {
        id: GroupId(d.id),
        site: SiteId(d.site),
        doors: d.doors.into_iter().map(DoorId).collect(),
        schedule: d.schedule.map(ScheduleId),
        members: d.members.into_iter().map(PersonId).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ChainedRule;

    /// A change log written before chains still reads: a one-rule entry is a chain of
    /// one, a detach an empty chain; a chain entry round-trips with its settings.
    #[test]
    fn door_rule_entries_old_and_new_decode() {
        // (text as stored, what it means)
        let cases = [
            (
                r#"{"v":1,"op":"door_rule","door":4,"rule":"two-person","fail_safe":true}"#.to_owned(),
                vec![ChainedRule::new("two-person", true)],
            ),
            (
                r#"{"v":1,"op":"door_rule","door":4,"rule":null,"fail_safe":false}"#.to_owned(),
                Vec::new(),
            ),
            (
                r#"{"v":1,"op":"door_rules","door":4,"rules":[{"rule":"a","fail_safe":false}]}"#.to_owned(),
                vec![ChainedRule::new("a", false)],
            ),
        ];
        for (text, rules) in cases {
            let decoded = decode(&text).unwrap();
            assert_eq!(
                decoded,
                Logged::Policy(PolicyChange::DoorRule { door: DoorId(4), rules }),
                "{text}"
            );
        }
        let mut configured = ChainedRule::new("two-person", false);
        configured.config.insert("window_s".into(), serde_json::json!(10));
        let entry = Logged::Policy(PolicyChange::DoorRule {
            door: DoorId(4),
            rules: vec![ChainedRule::new("anti-passback", true), configured],
        });
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
    }
}
