//! The core against the reference model of `reference.rs`, on random sites.
//!
//! A scenario is a set of records (built as they come, then salvaged into a valid model)
//! and a sequence of operations: changes (valid or not, sometimes with a stale
//! revision), decisions, and compactions. Three core paths run side by side:
//! a snapshot that only takes changes, one compacted whenever the scenario says so, and
//! a `SnapshotCell` compacted at the same points. All of them must agree with the
//! reference on every decision (effect, reason, credential, person, revision), on
//! whether each change is accepted (and the class of refusal), and in the end on the
//! whole model, compared through `records()`.
//!
//! Failures proptest finds are kept in `differential.proptest-regressions` next to this
//! file and replayed first on every run; bugs found this way also get a hand-written
//! scenario in `regressions` below.

use crate::fixture::{day, tag, ts, zone};
use crate::reference::{MAX_ID, Model, Outcome, Refusal};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use keyway_core::{
    CalendarId, CalendarRecord, Change, CredentialId, CredentialKind, CredentialRecord, DateRange, DaySet, Decision,
    DoorId, DoorMode, DoorRecord, GroupId, GroupRecord, HolidayCalendar, IqId, IqRecord, ModelError, Period, PersonId,
    PersonRecord, Presented, Record, Revision, RoleFlags, RoleId, Schedule, ScheduleId, ScheduleRecord, SiteId,
    SiteRecord, Snapshot, SnapshotCell, decide,
};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};
use std::sync::LazyLock;

/// Around these instants: both European DST switches, both American ones, and Christmas.
const ANCHORS: &[&str] = &[
    "2026-03-29T01:00:00Z",
    "2026-10-25T01:00:00Z",
    "2026-03-08T07:00:00Z",
    "2026-11-01T06:00:00Z",
    "2026-12-25T00:00:00Z",
];

static ZONES: LazyLock<Vec<TimeZone>> = LazyLock::new(|| {
    ["UTC", "Europe/Madrid", "America/New_York", "Asia/Kathmandu"]
        .into_iter()
        .map(zone)
        .collect()
});

/// Entities per site, by kind: ids are `site + sites * k` for `k < PER_SITE`, so an
/// id's natural site is `1 + (id - 1) % sites`.
const IQS: u32 = 1;
const SCHEDULES: u32 = 2;
const DOORS: u32 = 2;
const PEOPLE: u32 = 3;
const CREDENTIALS: u32 = 4;
const GROUPS: u32 = 2;

/// What every strategy of one scenario shares.
#[derive(Clone, Copy, Debug)]
struct Ctx {
    anchor: Timestamp,
    anchor_date: Date,
    sites: u32,
}

impl Ctx {
    fn natural_site(self, id: u32) -> u32 {
        1 + id.saturating_sub(1) % self.sites
    }

    /// The site of a new entity: its natural one mostly, any (or none) sometimes.
    fn site_for(self, id: u32, pick: u8) -> u32 {
        if pick < 248 {
            self.natural_site(id)
        } else {
            1 + u32::from(pick) % (self.sites + 1)
        }
    }

    /// An entity of a kind with `per_site` per site, on `site` mostly, anywhere sometimes.
    fn same_site(self, site: u32, per_site: u32, pick: u8) -> u32 {
        if pick < 248 {
            site + self.sites * (u32::from(pick) % per_site)
        } else {
            1 + u32::from(pick) % (self.sites * per_site + 1)
        }
    }
}

fn id(ctx: Ctx, per_site: u32) -> impl Strategy<Value = u32> + Clone {
    prop_oneof![
        40 => 1..=ctx.sites * per_site + 1,
        1 => Just(MAX_ID + 1),
        1 => Just(u32::MAX),
    ]
}

/// An instant a few days around the anchor, mostly on whole minutes; rarely the ends of
/// time.
fn instant(ctx: Ctx) -> impl Strategy<Value = Timestamp> + Clone {
    let seconds = prop_oneof![3 => Just(0i64), 1 => 0..60i64];
    let nanos = prop_oneof![4 => Just(0i32), 1 => 0..1_000_000_000i32];
    let minute = prop_oneof![Just(0i64), Just(59), Just(30), 0..60i64];
    let near = (-4i64..=4, 0i64..24, minute, seconds, nanos).prop_map(move |(d, h, m, s, ns)| {
        let second = ctx.anchor.as_second() + d * 86_400 + h * 3_600 + m * 60 + s;
        Timestamp::new(second, ns).unwrap_or_else(|e| panic!("{e}"))
    });
    prop_oneof![
        40 => near,
        1 => Just(Timestamp::MIN),
        1 => Just(Timestamp::MAX),
    ]
}

fn date(ctx: Ctx) -> impl Strategy<Value = Date> + Clone {
    (-4i64..=4).prop_map(move |d| {
        ctx.anchor_date
            .checked_add(SignedDuration::from_hours(24 * d))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn schedule(ctx: Ctx) -> impl Strategy<Value = Schedule> + Clone {
    let minute = prop_oneof![4 => (0u16..=24).prop_map(|h| h * 60), 1 => 0u16..=1440];
    let days = prop_oneof![
        2 => Just(DaySet::WORKDAYS.bits()),
        3 => Just(DaySet::EVERY_DAY.bits()),
        1 => Just(DaySet::HOLIDAY.bits()),
        1 => Just(DaySet::EVERY_DAY.with(DaySet::HOLIDAY).bits()),
        1 => (0u8..7).prop_map(|d| 1 << d),
        1 => 1u8..=255,
    ];
    let period = (days, minute.clone(), minute).prop_map(|(days, start, end)| Period {
        days: DaySet::from_bits(days),
        start,
        end: if end == start { (start + 60) % 1441 } else { end },
    });
    let range = proptest::option::weighted(
        0.25,
        (date(ctx), 0i64..=4).prop_map(|(first, len)| DateRange {
            first,
            last: first
                .checked_add(SignedDuration::from_hours(24 * len))
                .unwrap_or_else(|e| panic!("{e}")),
        }),
    );
    (proptest::collection::vec(period, 0..=4), range)
        .prop_map(|(periods, range)| Schedule::new(periods, range).unwrap_or_else(|_| Schedule::always()))
}

/// A secret of `kind` from a tiny alphabet, so that credentials collide and presented
/// bytes often name one; sometimes malformed.
fn secret(kind: CredentialKind) -> BoxedStrategy<Vec<u8>> {
    use proptest::collection::vec;
    use proptest::sample::select;
    match kind {
        CredentialKind::Tag => prop_oneof![
            8 => vec(select(vec![0x0a_u8, 0x0b]), 4),
            2 => vec(select(vec![0x0a_u8, 0x0b]), 5),
            1 => vec(any::<u8>(), 0..=12),
        ]
        .boxed(),
        CredentialKind::DigitalKey => prop_oneof![
            8 => vec(select(vec![1_u8, 2]), 1..=2),
            1 => vec(any::<u8>(), 0..=18),
        ]
        .boxed(),
        CredentialKind::Pin => prop_oneof![
            8 => vec(select(b"12".to_vec()), 4),
            1 => vec(select(b"12".to_vec()), 5),
            1 => vec(select(b"12a".to_vec()), 3..=9),
        ]
        .boxed(),
    }
}

fn kind_and_secret() -> impl Strategy<Value = (CredentialKind, Vec<u8>)> + Clone {
    proptest::sample::select(CredentialKind::ALL.to_vec()).prop_flat_map(|kind| (Just(kind), secret(kind)))
}

fn site_record(id: impl Strategy<Value = u32>) -> impl Strategy<Value = SiteRecord> {
    let calendar = proptest::option::weighted(0.7, prop_oneof![12 => 1u32..=2, 1 => Just(3u32)]);
    (id, 0..ZONES.len(), calendar, proptest::bool::weighted(0.08)).prop_map(|(id, z, calendar, lockdown)| SiteRecord {
        id: SiteId(id),
        time_zone: ZONES.get(z).cloned().unwrap_or(TimeZone::UTC),
        holiday_calendar: calendar.map(CalendarId),
        lockdown,
    })
}

fn calendar_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = CalendarRecord> {
    (id, proptest::collection::vec(date(ctx), 0..=5)).prop_map(|(id, dates)| CalendarRecord {
        id: CalendarId(id),
        calendar: HolidayCalendar::new(dates),
    })
}

fn iq_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = IqRecord> {
    (id, any::<u8>()).prop_map(move |(id, pick)| IqRecord {
        id: IqId(id),
        site: SiteId(ctx.site_for(id, pick)),
    })
}

fn schedule_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = ScheduleRecord> {
    (id, any::<u8>(), schedule(ctx)).prop_map(move |(id, pick, schedule)| ScheduleRecord {
        id: ScheduleId(id),
        site: SiteId(ctx.site_for(id, pick)),
        schedule,
    })
}

fn door_mode(ctx: Ctx, site: u32, pick: u8) -> DoorMode {
    match pick % 9 {
        0 => DoorMode::Office,
        1 | 2 => DoorMode::OfficeScheduled(ScheduleId(ctx.same_site(site, SCHEDULES, pick / 9))),
        _ => DoorMode::Normal,
    }
}

fn door_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = DoorRecord> {
    let iq = proptest::option::weighted(0.3, any::<u8>());
    (id, any::<u8>(), iq, any::<u8>(), proptest::bool::weighted(0.06)).prop_map(
        move |(id, pick, iq, mode, lockdown)| {
            let site = ctx.site_for(id, pick);
            DoorRecord {
                id: DoorId(id),
                site: SiteId(site),
                iq: iq.map(|p| IqId(ctx.same_site(site, IQS, p))),
                mode: door_mode(ctx, site, mode),
                lockdown,
            }
        },
    )
}

fn person_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = PersonRecord> {
    (id, any::<u8>(), 0u16..=3, proptest::bool::weighted(0.07)).prop_map(move |(id, pick, role, blocked)| {
        PersonRecord {
            id: PersonId(id),
            site: SiteId(ctx.site_for(id, pick)),
            role: RoleId(role),
            blocked,
        }
    })
}

fn group_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = GroupRecord> {
    use proptest::collection::vec;
    (
        id,
        any::<u8>(),
        vec(any::<u8>(), 0..=3),
        proptest::option::weighted(0.7, any::<u8>()),
        vec(any::<u8>(), 0..=4),
    )
        .prop_map(move |(id, pick, doors, schedule, members)| {
            let site = ctx.site_for(id, pick);
            GroupRecord {
                id: GroupId(id),
                site: SiteId(site),
                doors: doors
                    .into_iter()
                    .map(|p| DoorId(ctx.same_site(site, DOORS, p)))
                    .collect(),
                schedule: schedule.map(|p| ScheduleId(ctx.same_site(site, SCHEDULES, p))),
                members: members
                    .into_iter()
                    .map(|p| PersonId(ctx.same_site(site, PEOPLE, p)))
                    .collect(),
            }
        })
}

fn credential_record(ctx: Ctx, id: impl Strategy<Value = u32>) -> impl Strategy<Value = CredentialRecord> {
    (
        (id, any::<u8>(), kind_and_secret()),
        proptest::option::weighted(0.85, any::<u8>()),
        proptest::option::weighted(0.15, instant(ctx)),
        proptest::option::weighted(0.15, instant(ctx)),
        any::<bool>(),
        proptest::bool::weighted(0.07),
    )
        .prop_map(
            move |((id, pick, (kind, secret)), owner, valid_from, valid_until, offline_access, revoked)| {
                let site = ctx.site_for(id, pick);
                CredentialRecord {
                    id: CredentialId(id),
                    site: SiteId(site),
                    kind,
                    secret,
                    owner: owner.map(|p| PersonId(ctx.same_site(site, PEOPLE, p))),
                    valid_from,
                    valid_until,
                    offline_access,
                    revoked,
                }
            },
        )
}

fn role_flags() -> impl Strategy<Value = RoleFlags> {
    proptest::collection::vec(0u16..=3, 0..=2).prop_map(|roles| RoleFlags {
        lockdown_exempt: roles.into_iter().map(RoleId).collect(),
    })
}

/// For each id of a kind, a record with probability `p`: ids stay distinct and
/// references between records mostly resolve.
fn some_of<T: std::fmt::Debug, S: Strategy<Value = T>>(
    ids: u32,
    p: f64,
    record: impl Fn(Just<u32>) -> S,
) -> impl Strategy<Value = Vec<T>> {
    (1..=ids)
        .map(|id| proptest::option::weighted(p, record(Just(id))))
        .collect::<Vec<_>>()
        .prop_map(|records| records.into_iter().flatten().collect())
}

/// Any record at all, with ids from the small pools or past the limit.
fn junk(ctx: Ctx) -> BoxedStrategy<Record> {
    prop_oneof![
        calendar_record(ctx, 1u32..=3).prop_map(Record::Calendar),
        site_record(1..=ctx.sites + 2).prop_map(Record::Site),
        iq_record(ctx, id(ctx, IQS)).prop_map(Record::Iq),
        schedule_record(ctx, id(ctx, SCHEDULES)).prop_map(Record::Schedule),
        door_record(ctx, id(ctx, DOORS)).prop_map(Record::Door),
        person_record(ctx, id(ctx, PEOPLE)).prop_map(Record::Person),
        group_record(ctx, id(ctx, GROUPS)).prop_map(Record::Group),
        credential_record(ctx, id(ctx, CREDENTIALS)).prop_map(Record::Credential),
    ]
    .boxed()
}

fn records(ctx: Ctx) -> BoxedStrategy<Vec<Record>> {
    let n = ctx.sites;
    let sites: Vec<_> = (1..=n).map(|id| site_record(Just(id))).collect();
    (
        some_of(2, 0.97, move |id| calendar_record(ctx, id)).boxed(),
        sites.boxed(),
        some_of(n * IQS, 0.97, move |id| iq_record(ctx, id)).boxed(),
        some_of(n * SCHEDULES, 0.95, move |id| schedule_record(ctx, id)).boxed(),
        some_of(n * DOORS, 0.97, move |id| door_record(ctx, id)).boxed(),
        some_of(n * PEOPLE, 0.97, move |id| person_record(ctx, id)).boxed(),
        some_of(n * GROUPS, 0.8, move |id| group_record(ctx, id)).boxed(),
        some_of(n * CREDENTIALS, 0.8, move |id| credential_record(ctx, id)).boxed(),
        proptest::option::weighted(0.8, role_flags()).boxed(),
        proptest::option::weighted(0.3, junk(ctx)).boxed(),
    )
        .prop_map(
            |(calendars, sites, iqs, schedules, doors, people, groups, credentials, roles, junk)| {
                let mut out = Vec::new();
                out.extend(calendars.into_iter().map(Record::Calendar));
                out.extend(sites.into_iter().map(Record::Site));
                out.extend(iqs.into_iter().map(Record::Iq));
                out.extend(schedules.into_iter().map(Record::Schedule));
                out.extend(doors.into_iter().map(Record::Door));
                out.extend(people.into_iter().map(Record::Person));
                out.extend(groups.into_iter().map(Record::Group));
                out.extend(credentials.into_iter().map(Record::Credential));
                out.extend(roles.map(Record::Roles));
                out.extend(junk);
                out
            },
        )
        .boxed()
}

fn change(ctx: Ctx) -> BoxedStrategy<Change> {
    let person = move || id(ctx, PEOPLE).prop_map(PersonId);
    let cred = move || id(ctx, CREDENTIALS).prop_map(CredentialId);
    let door = move || id(ctx, DOORS).prop_map(DoorId);
    let membership = (id(ctx, GROUPS), any::<u8>()).prop_map(move |(group, pick)| {
        let site = ctx.natural_site(group);
        (PersonId(ctx.same_site(site, PEOPLE, pick)), GroupId(group))
    });
    prop_oneof![
        3 => person().prop_map(Change::BlockPerson),
        2 => person().prop_map(Change::UnblockPerson),
        3 => cred().prop_map(Change::RevokeCredential),
        2 => cred().prop_map(Change::RestoreCredential),
        6 => credential_record(ctx, id(ctx, CREDENTIALS)).prop_map(Change::PutCredential),
        2 => cred().prop_map(Change::RemoveCredential),
        4 => membership.clone().prop_map(|(person, group)| Change::Grant { person, group }),
        2 => membership.prop_map(|(person, group)| Change::Ungrant { person, group }),
        3 => person_record(ctx, id(ctx, PEOPLE)).prop_map(Change::PutPerson),
        1 => person().prop_map(Change::RemovePerson),
        2 => door_record(ctx, id(ctx, DOORS)).prop_map(Change::PutDoor),
        1 => door().prop_map(Change::RemoveDoor),
        2 => (id(ctx, DOORS), any::<u8>()).prop_map(move |(door, pick)| Change::SetDoorMode {
            door: DoorId(door),
            mode: door_mode(ctx, ctx.natural_site(door), pick),
        }),
        2 => (door(), any::<bool>()).prop_map(|(door, on)| Change::SetDoorLockdown { door, on }),
        1 => (1..=ctx.sites + 1, any::<bool>()).prop_map(|(site, on)| Change::SetSiteLockdown {
            site: SiteId(site),
            on,
        }),
        2 => group_record(ctx, id(ctx, GROUPS)).prop_map(Change::PutGroup),
        1 => id(ctx, GROUPS).prop_map(|g| Change::RemoveGroup(GroupId(g))),
        1 => schedule_record(ctx, id(ctx, SCHEDULES)).prop_map(Change::PutSchedule),
        1 => id(ctx, SCHEDULES).prop_map(|s| Change::RemoveSchedule(ScheduleId(s))),
        1 => iq_record(ctx, id(ctx, IQS)).prop_map(Change::PutIq),
        1 => id(ctx, IQS).prop_map(|q| Change::RemoveIq(IqId(q))),
        1 => site_record(1..=ctx.sites + 1).prop_map(Change::PutSite),
        1 => calendar_record(ctx, 1u32..=3).prop_map(Change::PutCalendar),
        1 => role_flags().prop_map(Change::SetRoles),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum Op {
    /// A change, at the next revision, or at a stale one.
    Change { stale: bool, change: Change },
    /// A request with random bytes.
    Decide {
        door: DoorId,
        kind: CredentialKind,
        secret: Vec<u8>,
        at: Timestamp,
    },
    /// A request aimed at a live credential and a door its owner may open, both picked
    /// from the reference model when the operation runs.
    Aimed { credential: u8, door: u8, at: Timestamp },
    /// Compact the compacting snapshot and the cell.
    Compact,
}

fn op(ctx: Ctx) -> BoxedStrategy<Op> {
    prop_oneof![
        10 => (proptest::bool::weighted(0.06), change(ctx)).prop_map(|(stale, change)| Op::Change { stale, change }),
        3 => (
            prop_oneof![10 => 1..=ctx.sites * DOORS + 1, 1 => any::<u32>()],
            kind_and_secret(),
            instant(ctx)
        )
            .prop_map(|(door, (kind, secret), at)| Op::Decide {
                door: DoorId(door),
                kind,
                secret,
                at,
            }),
        8 => (any::<u8>(), any::<u8>(), instant(ctx)).prop_map(|(credential, door, at)| Op::Aimed {
            credential,
            door,
            at
        }),
        1 => Just(Op::Compact),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Scenario {
    records: Vec<Record>,
    ops: Vec<Op>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (0..ANCHORS.len(), 1u32..=3).prop_flat_map(|(anchor, sites)| {
        let anchor = ts(ANCHORS.get(anchor).copied().unwrap_or("2026-01-01T00:00:00Z"));
        let ctx = Ctx {
            anchor,
            anchor_date: TimeZone::UTC.to_datetime(anchor).date(),
            sites,
        };
        (records(ctx), proptest::collection::vec(op(ctx), 0..=40)).prop_map(|(records, ops)| Scenario { records, ops })
    })
}

/// What a core path decided, in the reference's terms.
fn outcome(d: &Decision) -> Outcome {
    Outcome {
        reason: d.reason,
        credential: d.credential,
        person: d.person,
    }
}

fn refusal(result: &Result<Snapshot, ModelError>) -> Result<(), Option<Refusal>> {
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::of(e)),
    }
}

/// Run one scenario through the reference and the three core paths.
fn run(scenario: &Scenario) -> Result<Stats, TestCaseError> {
    let mut stats = Stats::default();
    // The records as generated: both sides accept them, or refuse them for the same reason.
    let core_raw = Snapshot::build(Revision(1), scenario.records.clone());
    let reference_raw = Model::build(1, &scenario.records);
    prop_assert_eq!(
        refusal(&core_raw),
        reference_raw.as_ref().map(|_| ()).map_err(|e| Some(*e)),
        "build of the generated records: core {:?}",
        core_raw.as_ref().err()
    );
    if let Ok(snapshot) = &core_raw {
        stats.raw_builds += 1;
        prop_assert_eq!(
            snapshot.records(),
            reference_raw.as_ref().map(Model::records).unwrap_or_default()
        );
    }

    // The valid part of them, as the scenario's starting point.
    let salvaged = Model::salvage(&scenario.records).records();
    let mut reference = Model::build(1, &salvaged)
        .map_err(|e| TestCaseError::fail(format!("reference refuses its own records: {e:?}")))?;
    let start = Snapshot::build(Revision(1), salvaged.clone())
        .map_err(|e| TestCaseError::fail(format!("core refuses salvaged records: {e}")))?;
    prop_assert_eq!(start.records(), salvaged);
    let mut plain = start.clone();
    let mut compacting = start.clone();
    let cell = SnapshotCell::new(start);

    for (step, op) in scenario.ops.iter().enumerate() {
        match op {
            Op::Change { stale, change } => {
                let current = plain.revision().get();
                let revision = if *stale {
                    current.saturating_sub(u64::from(current > 1))
                } else {
                    current + 1
                };
                let by_reference = reference.apply(revision, change);
                let by_plain = plain.apply(Revision(revision), change);
                let by_compacting = compacting.apply(Revision(revision), change);
                let by_cell = cell.apply(Revision(revision), change.clone());
                prop_assert_eq!(
                    refusal(&by_plain),
                    by_reference.map_err(Some),
                    "step {}: {:?} at r{}: core says {:?}",
                    step,
                    change,
                    revision,
                    by_plain.as_ref().err()
                );
                prop_assert_eq!(by_compacting.as_ref().err(), by_plain.as_ref().err(), "step {}", step);
                prop_assert_eq!(by_cell.as_ref().err(), by_plain.as_ref().err(), "step {}", step);
                match (by_plain, by_compacting) {
                    (Ok(p), Ok(c)) => {
                        stats.accepted += 1;
                        plain = p;
                        compacting = c;
                    }
                    _ => stats.refused += 1,
                }
                // A refused change leaves every path at the revision it had.
                prop_assert_eq!(plain.revision().get(), reference.revision);
                prop_assert_eq!(cell.load().revision(), plain.revision());
            }
            Op::Decide { door, kind, secret, at } => {
                compare(
                    &reference,
                    &plain,
                    &compacting,
                    &cell,
                    *door,
                    *kind,
                    secret,
                    *at,
                    step,
                    &mut stats,
                )?;
            }
            Op::Aimed { credential, door, at } => {
                let credentials: Vec<_> = reference.credentials().collect();
                if credentials.is_empty() {
                    continue;
                }
                let pick = usize::from(*credential) % credentials.len();
                let Some(&(id, kind, secret, site)) = credentials.get(pick) else {
                    continue;
                };
                let mut doors = match reference.owner(id) {
                    Some(owner) if door % 4 != 0 => reference.doors_of(owner),
                    _ => Vec::new(),
                };
                if doors.is_empty() {
                    doors = reference.doors().filter(|&(_, s)| s == site).map(|(d, _)| d).collect();
                }
                if doors.is_empty() {
                    doors = reference.doors().map(|(d, _)| d).collect();
                }
                let door = doors.get(usize::from(*door) % doors.len().max(1)).copied().unwrap_or(0);
                let secret = secret.to_vec();
                compare(
                    &reference,
                    &plain,
                    &compacting,
                    &cell,
                    DoorId(door),
                    kind,
                    &secret,
                    *at,
                    step,
                    &mut stats,
                )?;
            }
            Op::Compact => {
                compacting = compacting
                    .compact()
                    .map_err(|e| TestCaseError::fail(format!("compact: {e}")))?;
                prop_assert_eq!(compacting.overlay_len(), 0);
                let published = cell
                    .compact()
                    .map_err(|e| TestCaseError::fail(format!("cell compact: {e}")))?;
                prop_assert_eq!(published, Some(plain.revision()));
                stats.compactions += 1;
            }
        }
    }

    // In the end every path holds the reference's model.
    let expected = reference.records();
    prop_assert_eq!(plain.records(), expected.clone(), "plain");
    prop_assert_eq!(compacting.records(), expected.clone(), "compacting");
    prop_assert_eq!(cell.load().records(), expected, "cell");
    Ok(stats)
}

#[expect(clippy::too_many_arguments, reason = "the paths and the request, spelled out")]
fn compare(
    reference: &Model,
    plain: &Snapshot,
    compacting: &Snapshot,
    cell: &SnapshotCell,
    door: DoorId,
    kind: CredentialKind,
    secret: &[u8],
    at: Timestamp,
    step: usize,
    stats: &mut Stats,
) -> Result<(), TestCaseError> {
    let presented = Presented { kind, secret };
    let expected = reference.decide(door, kind, secret, at);
    let paths = [
        ("plain", decide(plain, door, presented, at)),
        ("compacting", decide(compacting, door, presented, at)),
        ("cell", decide(&cell.load(), door, presented, at)),
    ];
    for (path, d) in paths {
        prop_assert_eq!(
            outcome(&d),
            expected,
            "step {}, {} path: {} presents {:?} {:02x?} at {}",
            step,
            path,
            door,
            kind,
            secret,
            at
        );
        prop_assert_eq!(d.effect, d.reason.effect());
        prop_assert_eq!(d.revision.get(), reference.revision);
    }
    stats.count(expected.reason);
    Ok(())
}

/// What the scenarios covered, to keep the generator honest.
#[derive(Clone, Debug, Default)]
struct Stats {
    raw_builds: u64,
    accepted: u64,
    refused: u64,
    compactions: u64,
    reasons: std::collections::BTreeMap<&'static str, u64>,
}

impl Stats {
    fn count(&mut self, reason: keyway_core::Reason) {
        *self.reasons.entry(reason.code()).or_default() += 1;
    }

    fn add(&mut self, other: &Stats) {
        self.raw_builds += other.raw_builds;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.compactions += other.compactions;
        for (reason, n) in &other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/core/differential.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn core_agrees_with_the_reference(scenario in scenario()) {
        run(&scenario)?;
    }
}

#[test]
fn the_generator_reaches_every_reason() {
    // Independent of the big run: a fixed-seed sample of scenarios must hit every reason,
    // accept and refuse changes, and compact.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = scenario();
    let mut totals = Stats::default();
    for _ in 0..400 {
        let scenario = strategy.new_tree(&mut runner).unwrap().current();
        totals.add(&run(&scenario).unwrap());
    }
    for reason in [
        "granted",
        "office_mode",
        "unknown_door",
        "unknown_credential",
        "unassigned_credential",
        "person_blocked",
        "credential_revoked",
        "not_yet_valid",
        "expired",
        "no_right",
        "outside_schedule",
        "holiday",
        "lockdown",
    ] {
        assert!(
            totals.reasons.get(reason).copied().unwrap_or(0) > 0,
            "{reason} never reached: {totals:?}"
        );
    }
    assert!(
        totals.accepted > 0 && totals.refused > 0 && totals.compactions > 0 && totals.raw_builds > 0,
        "{totals:?}"
    );
}

#[test]
fn the_reference_restates_the_id_limit() {
    assert_eq!(MAX_ID, keyway_core::MAX_ID);
}

/// Hand-written scenarios: interactions worth keeping whatever the generator does, and
/// a row for each bug the differential test finds.
#[test]
fn regressions() {
    let site = |id| {
        Record::Site(SiteRecord {
            id: SiteId(id),
            time_zone: zone("Europe/Madrid"),
            holiday_calendar: Some(CalendarId(1)),
            lockdown: false,
        })
    };
    let base = || {
        vec![
            Record::Calendar(CalendarRecord {
                id: CalendarId(1),
                calendar: HolidayCalendar::new(vec![day("2026-03-30")]),
            }),
            site(1),
            site(2),
            Record::Door(crate::fixture::door(1, 1)),
            Record::Door(crate::fixture::door(2, 2)),
            Record::Person(crate::fixture::person(1, 1, 0)),
            Record::Person(crate::fixture::person(2, 2, 0)),
            Record::Credential(tag(1, 1, &[10, 10, 10, 10], Some(1))),
            Record::Credential(tag(2, 2, &[10, 10, 10, 10], Some(2))),
            Record::Group(crate::fixture::group(1, 1, &[1], None, &[1])),
        ]
    };
    let at = ts("2026-03-29T10:00:00Z");
    let request = |door, secret: &[u8]| Op::Decide {
        door: DoorId(door),
        kind: CredentialKind::Tag,
        secret: secret.to_vec(),
        at,
    };
    let change = |change| Op::Change { stale: false, change };
    let scenarios = [
        // A secret moves from one credential to another, across compactions.
        vec![
            change(Change::PutCredential(tag(1, 1, &[11, 11, 11, 11], Some(1)))),
            request(1, &[10, 10, 10, 10]),
            Op::Compact,
            change(Change::PutCredential(tag(3, 1, &[10, 10, 10, 10], None))),
            request(1, &[10, 10, 10, 10]),
            change(Change::RemoveCredential(CredentialId(3))),
            Op::Compact,
            request(1, &[10, 10, 10, 10]),
            request(1, &[11, 11, 11, 11]),
        ],
        // A person is removed and comes back: credentials stay unassigned, groups forgot them.
        vec![
            change(Change::RemovePerson(PersonId(1))),
            request(1, &[10, 10, 10, 10]),
            change(Change::PutPerson(crate::fixture::person(1, 1, 0))),
            request(1, &[10, 10, 10, 10]),
            Op::Compact,
            change(Change::PutCredential(tag(1, 1, &[10, 10, 10, 10], Some(1)))),
            request(1, &[10, 10, 10, 10]),
        ],
        // Refused changes in between accepted ones, and stale revisions.
        vec![
            change(Change::Grant {
                person: PersonId(2),
                group: GroupId(1),
            }),
            change(Change::PutCredential(tag(4, 1, &[10, 10, 10, 10], None))),
            Op::Change {
                stale: true,
                change: Change::BlockPerson(PersonId(1)),
            },
            change(Change::RemoveDoor(DoorId(1))),
            change(Change::PutDoor(crate::fixture::door(2, 1))),
            change(Change::RevokeCredential(CredentialId(1))),
            request(1, &[10, 10, 10, 10]),
            Op::Compact,
            change(Change::RemoveCredential(CredentialId(1))),
            change(Change::PutCredential(CredentialRecord {
                revoked: true,
                ..tag(1, 1, &[10, 10, 10, 10], Some(1))
            })),
            request(1, &[10, 10, 10, 10]),
            request(2, &[10, 10, 10, 10]),
        ],
        // A holiday the day after the anchor, a night shift, and a schedule swapped under a group.
        vec![
            change(Change::PutSchedule(ScheduleRecord {
                id: ScheduleId(1),
                site: SiteId(1),
                schedule: Schedule::new(vec![Period::hm(DaySet::EVERY_DAY, (22, 0), (6, 0))], None)
                    .unwrap_or_else(|e| panic!("{e}")),
            })),
            change(Change::PutGroup(crate::fixture::group(1, 1, &[1], Some(1), &[1]))),
            Op::Decide {
                door: DoorId(1),
                kind: CredentialKind::Tag,
                secret: vec![10, 10, 10, 10],
                at: ts("2026-03-30T03:00:00Z"),
            },
            Op::Decide {
                door: DoorId(1),
                kind: CredentialKind::Tag,
                secret: vec![10, 10, 10, 10],
                at: ts("2026-03-30T23:00:00Z"),
            },
            Op::Decide {
                door: DoorId(1),
                kind: CredentialKind::Tag,
                secret: vec![10, 10, 10, 10],
                at: ts("2026-03-31T03:00:00Z"),
            },
            change(Change::RemoveSchedule(ScheduleId(1))),
        ],
    ];
    for (i, ops) in scenarios.into_iter().enumerate() {
        let scenario = Scenario { records: base(), ops };
        if let Err(e) = run(&scenario) {
            panic!("regression scenario {i}: {e}");
        }
    }
}

/// Doors and people with many groups: the core keeps short group lists inline and long
/// ones shared, and searches long ones by bisection. Twelve groups open door 1, person 1
/// is in all of them, each group open for one hour of the day; groups come and go.
#[test]
fn many_groups_on_one_door_and_person() {
    let hourly = |h: u16| {
        Schedule::new(vec![Period::hm(DaySet::EVERY_DAY, (h, 0), (h + 1, 0))], None).unwrap_or_else(|e| panic!("{e}"))
    };
    let mut records = vec![
        Record::Site(SiteRecord {
            id: SiteId(1),
            time_zone: zone("America/New_York"),
            holiday_calendar: None,
            lockdown: false,
        }),
        Record::Door(crate::fixture::door(1, 1)),
        Record::Door(crate::fixture::door(2, 1)),
        Record::Person(crate::fixture::person(1, 1, 0)),
        Record::Person(crate::fixture::person(2, 1, 0)),
        Record::Credential(tag(1, 1, &[10, 10, 10, 10], Some(1))),
        Record::Credential(tag(2, 1, &[11, 11, 11, 11], Some(2))),
    ];
    for g in 1..=12u16 {
        records.push(Record::Schedule(ScheduleRecord {
            id: ScheduleId(u32::from(g)),
            site: SiteId(1),
            schedule: hourly(6 + g),
        }));
        records.push(Record::Group(crate::fixture::group(
            u32::from(g) * 3,
            1,
            &[1, 2],
            Some(u32::from(g)),
            &[1],
        )));
    }
    let request = |secret: u8, door: u32, hour: i64| Op::Decide {
        door: DoorId(door),
        kind: CredentialKind::Tag,
        secret: vec![secret; 4],
        at: ts("2026-11-25T05:00:00Z") + SignedDuration::from_hours(hour),
    };
    let change = |change| Op::Change { stale: false, change };
    let mut ops: Vec<Op> = (0..24).map(|h| request(10, 1, h)).collect();
    ops.extend([
        change(Change::Ungrant {
            person: PersonId(1),
            group: GroupId(3),
        }),
        change(Change::Ungrant {
            person: PersonId(1),
            group: GroupId(27),
        }),
        change(Change::Grant {
            person: PersonId(2),
            group: GroupId(30),
        }),
        change(Change::RemoveGroup(GroupId(33))),
        change(Change::PutGroup(crate::fixture::group(36, 1, &[2], Some(12), &[1, 2]))),
        change(Change::PutGroup(crate::fixture::group(1, 1, &[1], Some(5), &[2]))),
    ]);
    ops.extend((0..24).map(|h| request(10, 1, h)));
    ops.extend((0..24).map(|h| request(11, 1, h)));
    ops.push(Op::Compact);
    ops.extend((0..24).map(|h| request(10, 2, h)));
    ops.extend([
        change(Change::RemovePerson(PersonId(1))),
        change(Change::PutPerson(crate::fixture::person(1, 1, 0))),
        change(Change::PutCredential(tag(1, 1, &[10, 10, 10, 10], Some(1)))),
        change(Change::Grant {
            person: PersonId(1),
            group: GroupId(6),
        }),
    ]);
    ops.extend((0..24).map(|h| request(10, 1, h)));
    let stats = run(&Scenario { records, ops }).unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.reasons.get("granted").copied().unwrap_or(0) >= 24, "{stats:?}");
}
