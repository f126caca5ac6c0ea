//! A generator of realistic populations: sites with IQs, doors, people, credentials,
//! access groups, schedules and holidays, plus a stream of door requests.
//!
//! The benchmarks, the `keyway simulate` command and load tests share it, so that every
//! figure in BENCHMARKS.md is measured on the same shape of data. It is deterministic:
//! the same spec and seed give the same population.
//!
//! Shape, following what gateway deployments look like:
//! - each site has 10 IQs with 10 doors each (100 doors), and a size drawn with skew: a few
//!   campus sites hold ten times the people of an ordinary one;
//! - each site has a holiday calendar, and three schedules: office hours (Mon-Fri
//!   07:00-19:00), a night shift crossing midnight (22:00-06:00) and weekends;
//! - access groups follow a Zipf law: on every site one "everyone" group holds most
//!   people, and most people are in 1 to 3 groups;
//! - credentials are mostly 7-byte tag UIDs, with digital keys and PINs mixed in, a few
//!   unassigned tags, time-limited visitors, blocked people and revoked tags.

use jiff::Timestamp;
use jiff::civil::date;
use jiff::tz::TimeZone;
use keyway_core::{
    CalendarId, CalendarRecord, CredentialId, CredentialKind, CredentialRecord, DaySet, DoorId, DoorMode, DoorRecord,
    GroupId, GroupRecord, HolidayCalendar, IqId, IqRecord, Period, PersonId, PersonRecord, Record, RoleFlags, Schedule,
    ScheduleId, ScheduleRecord, SiteId, SiteRecord,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The role ids the generator hands out; the standard roles plugin uses the same order.
pub mod roles {
    use keyway_core::RoleId;
    /// The site owner.
    pub const OWNER: RoleId = RoleId(0);
    /// A site admin.
    pub const SITE_ADMIN: RoleId = RoleId(1);
    /// A super user.
    pub const SUPER_USER: RoleId = RoleId(2);
    /// A basic user.
    pub const BASIC_USER: RoleId = RoleId(3);
}

const IQS_PER_SITE: u32 = 10;
const DOORS_PER_IQ: u32 = 10;
const ZONES: [&str; 6] = [
    "Europe/Madrid",
    "Europe/London",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
];

/// How big a population to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PopulationSpec {
    /// Credentials in all.
    pub credentials: u32,
    /// People in all.
    pub people: u32,
    /// Doors in all (rounded to whole sites of 100).
    pub doors: u32,
    /// Access groups in all.
    pub groups: u32,
    pub seed: u64,
}

impl PopulationSpec {
    /// The gateway scale: 1M credentials, 1M people, 100k doors, 10k groups,
    /// 10k IQs.
    #[must_use]
    pub const fn gateway_scale() -> Self {
        PopulationSpec {
            credentials: 1_000_000,
            people: 1_000_000,
            doors: 100_000,
            groups: 10_000,
            seed: 7,
        }
    }

    /// The same shape, `1/divisor` of the size.
    #[must_use]
    pub const fn scaled_down(divisor: u32) -> Self {
        let full = Self::gateway_scale();
        let d = if divisor == 0 { 1 } else { divisor };
        PopulationSpec {
            credentials: full.credentials / d,
            people: full.people / d,
            doors: full.doors / d,
            groups: full.groups / d,
            seed: full.seed,
        }
    }
}

/// A generated credential's presentation: what a reader would send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedRequest {
    pub door: DoorId,
    /// The kind read.
    pub kind: CredentialKind,
    /// The bytes read.
    pub secret: Vec<u8>,
    /// When.
    pub at: Timestamp,
}

/// A generated population.
#[derive(Clone, Debug)]
pub struct Population {
    /// Every record, ready for [`keyway_core::Snapshot::build`].
    pub records: Vec<Record>,
    /// The spec it was made from.
    pub spec: PopulationSpec,
    /// Per site: its first door id and its number of doors.
    site_doors: Vec<(u32, u32)>,
    /// Per credential (by index): its site, kind and secret.
    credentials: Vec<(u32, CredentialKind, Vec<u8>)>,
    /// Per group: its site and doors.
    group_doors: Vec<Vec<DoorId>>,
    /// Per person: their groups.
    person_groups: Vec<Vec<u32>>,
    /// Per credential: its owner index, if any.
    owners: Vec<Option<u32>>,
}

impl Population {
    /// Generate the population of `spec`.
    #[must_use]
    pub fn generate(spec: PopulationSpec) -> Self {
        let mut rng = SmallRng::seed_from_u64(spec.seed);
        let doors_per_site = IQS_PER_SITE * DOORS_PER_IQ;
        let sites = (spec.doors / doors_per_site).max(1);
        let mut records = Vec::new();

        // Site sizes: one in fifty is a campus with ten times the people.
        let weights: Vec<u32> = (0..sites).map(|s| if s % 50 == 0 { 10 } else { 1 }).collect();
        let weight_sum: u64 = weights.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
        let groups_per_site = (spec.groups / sites).max(1);

        let mut site_doors = Vec::with_capacity(sites as usize);
        let mut group_doors = Vec::new();
        let mut person_groups: Vec<Vec<u32>> = Vec::with_capacity(spec.people as usize);
        let mut person_site = Vec::with_capacity(spec.people as usize);
        let mut site_people: Vec<(u32, u32)> = Vec::with_capacity(sites as usize);
        let mut group_members: Vec<Vec<PersonId>> = Vec::new();
        records.push(Record::Roles(RoleFlags {
            lockdown_exempt: vec![roles::OWNER, roles::SITE_ADMIN],
        }));

        let mut next_person = 0u32;
        for s in 0..sites {
            let site = SiteId(s);
            let zone = ZONES[s as usize % ZONES.len()];
            let time_zone = TimeZone::get(zone).unwrap_or(TimeZone::UTC);
            records.push(Record::Calendar(CalendarRecord {
                id: CalendarId(s),
                calendar: HolidayCalendar::new(vec![
                    date(2026, 1, 1),
                    date(2026, 5, 1),
                    date(2026, 12, 25),
                    date(2027, 1, 1),
                    date(2027, 5, 1),
                    date(2027, 12, 25),
                ]),
            }));
            records.push(Record::Site(SiteRecord {
                id: site,
                time_zone,
                holiday_calendar: Some(CalendarId(s)),
                lockdown: false,
            }));
            for (k, sched) in site_schedules().into_iter().enumerate() {
                records.push(Record::Schedule(ScheduleRecord {
                    id: ScheduleId(s * 3 + k as u32),
                    site,
                    schedule: sched,
                }));
            }
            let first_door = s * doors_per_site;
            for i in 0..IQS_PER_SITE {
                let iq = IqId(s * IQS_PER_SITE + i);
                records.push(Record::Iq(IqRecord { id: iq, site }));
                for d in 0..DOORS_PER_IQ {
                    let id = first_door + i * DOORS_PER_IQ + d;
                    // A few doors run office mode on office hours; one door per site is
                    // in manual office mode.
                    let mode = match id % 97 {
                        0 => DoorMode::OfficeScheduled(ScheduleId(s * 3)),
                        1 => DoorMode::Office,
                        _ => DoorMode::Normal,
                    };
                    records.push(Record::Door(DoorRecord {
                        id: DoorId(id),
                        site,
                        iq: Some(iq),
                        mode,
                        lockdown: id % 211 == 5,
                    }));
                }
            }
            site_doors.push((first_door, doors_per_site));

            // People of this site.
            let share = u64::from(spec.people) * u64::from(weights[s as usize]) / weight_sum;
            let count = if s + 1 == sites {
                spec.people.saturating_sub(next_person)
            } else {
                share as u32
            };
            site_people.push((next_person, count));
            // Groups: group 0 is "everyone" (main entrances), others are Zipf-sized.
            let first_group = s * groups_per_site;
            for g in 0..groups_per_site {
                let doors: Vec<DoorId> = if g == 0 {
                    (0..IQS_PER_SITE)
                        .map(|i| DoorId(first_door + i * DOORS_PER_IQ))
                        .collect()
                } else {
                    let n = rng.random_range(1..=6);
                    (0..n)
                        .map(|_| DoorId(first_door + rng.random_range(0..doors_per_site)))
                        .collect()
                };
                group_doors.push(doors);
                group_members.push(Vec::new());
                let _ = first_group;
            }
            for p in next_person..next_person + count {
                let mut mine = Vec::with_capacity(3);
                if rng.random_bool(0.6) {
                    mine.push(first_group);
                }
                let extra = match rng.random_range(0..10) {
                    0..=5 => 1,
                    6..=8 => 2,
                    _ => 3,
                };
                while mine.len() < extra {
                    let g = first_group + zipf(&mut rng, groups_per_site);
                    if !mine.contains(&g) {
                        mine.push(g);
                    }
                }
                for g in &mine {
                    group_members[*g as usize].push(PersonId(p));
                }
                person_groups.push(mine);
                person_site.push(s);
                let role = match p % 1000 {
                    0 => roles::OWNER,
                    1..=4 => roles::SITE_ADMIN,
                    5..=49 => roles::SUPER_USER,
                    _ => roles::BASIC_USER,
                };
                records.push(Record::Person(PersonRecord {
                    id: PersonId(p),
                    site,
                    role,
                    blocked: p % 211 == 17,
                }));
            }
            next_person += count;
        }

        for (g, members) in group_members.into_iter().enumerate() {
            let site = g as u32 / groups_per_site;
            let schedule = match g % 5 {
                0 | 1 => None,
                2 | 3 => Some(ScheduleId(site * 3)),
                _ => Some(ScheduleId(site * 3 + 1 + (g as u32 % 2))),
            };
            records.push(Record::Group(GroupRecord {
                id: GroupId(g as u32),
                site: SiteId(site),
                doors: group_doors[g].clone(),
                schedule,
                members,
            }));
        }

        let base_time: Timestamp = Timestamp::constant(1_790_000_000, 0);
        let mut credentials = Vec::with_capacity(spec.credentials as usize);
        let mut owners = Vec::with_capacity(spec.credentials as usize);
        let mut used = std::collections::HashSet::with_capacity(spec.credentials as usize);
        for c in 0..spec.credentials {
            let owner = if spec.people == 0 || c % 50 == 49 {
                None
            } else {
                Some(c % spec.people)
            };
            let site = owner.map_or_else(|| c % sites, |p| person_site[p as usize]);
            let (kind, secret) = loop {
                let (kind, secret) = match c % 20 {
                    0 | 1 => (CredentialKind::DigitalKey, rng.random::<[u8; 16]>().to_vec()),
                    2 => (
                        CredentialKind::Pin,
                        format!("{:06}", rng.random_range(0..1_000_000)).into_bytes(),
                    ),
                    _ => (CredentialKind::Tag, rng.random::<[u8; 7]>().to_vec()),
                };
                if used.insert((site, kind, secret.clone())) {
                    break (kind, secret);
                }
            };
            let (valid_from, valid_until) = match c % 100 {
                3 => (
                    Some(base_time),
                    Some(base_time + jiff::SignedDuration::from_hours(24 * 365 * 3)),
                ),
                4 => (None, Some(base_time - jiff::SignedDuration::from_hours(24))),
                5 => (Some(base_time + jiff::SignedDuration::from_hours(24 * 365 * 3)), None),
                _ => (None, None),
            };
            records.push(Record::Credential(CredentialRecord {
                id: CredentialId(c),
                site: SiteId(site),
                kind,
                secret: secret.clone(),
                owner: owner.map(PersonId),
                valid_from,
                valid_until,
                offline_access: c % 7 == 0,
                revoked: c % 223 == 11,
            }));
            credentials.push((site, kind, secret));
            owners.push(owner);
        }
        drop(used);

        Population {
            records,
            spec,
            site_doors,
            credentials,
            group_doors,
            person_groups,
            owners,
        }
    }

    /// `count` requests, most of them a person at a door of one of their groups, the rest
    /// random doors and unknown credentials, at times spread over a week of 2026-27.
    #[must_use]
    pub fn requests(&self, count: usize, seed: u64) -> Vec<GeneratedRequest> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let start = Timestamp::constant(1_790_000_000, 0).as_second();
        (0..count)
            .map(|_| {
                let at =
                    Timestamp::from_second(start + rng.random_range(0..7 * 86_400)).unwrap_or(Timestamp::UNIX_EPOCH);
                if self.credentials.is_empty() {
                    return GeneratedRequest {
                        door: DoorId(0),
                        kind: CredentialKind::Tag,
                        secret: vec![1, 2, 3, 4],
                        at,
                    };
                }
                let c = rng.random_range(0..self.credentials.len());
                let (site, kind, secret) = &self.credentials[c];
                let (first_door, doors) = self.site_doors[*site as usize];
                let roll = rng.random_range(0..100);
                let door = match self.owners[c] {
                    Some(p) if roll < 80 => {
                        let groups = &self.person_groups[p as usize];
                        if groups.is_empty() {
                            DoorId(first_door + rng.random_range(0..doors))
                        } else {
                            let g = groups[rng.random_range(0..groups.len())] as usize;
                            let ds = &self.group_doors[g];
                            ds[rng.random_range(0..ds.len())]
                        }
                    }
                    _ => DoorId(first_door + rng.random_range(0..doors)),
                };
                if roll >= 97 {
                    // A tag this site has never seen.
                    return GeneratedRequest {
                        door,
                        kind: CredentialKind::Tag,
                        secret: rng.random::<[u8; 10]>().to_vec(),
                        at,
                    };
                }
                GeneratedRequest {
                    door,
                    kind: *kind,
                    secret: secret.clone(),
                    at,
                }
            })
            .collect()
    }

    /// How many sites the population has.
    #[must_use]
    pub fn sites(&self) -> usize {
        self.site_doors.len()
    }
}

fn site_schedules() -> [Schedule; 3] {
    let office = Schedule::new(vec![Period::hm(DaySet::WORKDAYS, (7, 0), (19, 0))], None);
    let night = Schedule::new(vec![Period::hm(DaySet::EVERY_DAY, (22, 0), (6, 0))], None);
    let weekend = Schedule::new(
        vec![
            Period::hm(DaySet::WEEKEND, (9, 0), (14, 0)),
            Period::hm(DaySet::HOLIDAY, (10, 0), (12, 0)),
        ],
        None,
    );
    [
        office.unwrap_or_else(|_| Schedule::always()),
        night.unwrap_or_else(|_| Schedule::always()),
        weekend.unwrap_or_else(|_| Schedule::always()),
    ]
}

/// A Zipf-like draw over `0..n` (n >= 1), favouring small indexes.
fn zipf(rng: &mut SmallRng, n: u32) -> u32 {
    let n = n.max(1);
    // Inverse of a harmonic-ish CDF: u^2 skews towards 0.
    let u: f64 = rng.random();
    ((u * u * u) * f64::from(n)) as u32 % n
}
