//! casbin as a peer: RBAC over the same population, the same requests.
//!
//! Model (casbin's own terms):
//! - `g, person, group` for every membership; `g, person, blocked` and
//!   `g, person, exempt` (role passes lockdown);
//! - `p, group, door, schedule, allow` for every group x door;
//! - `p, blocked, *, always, deny`; `p, *, door, always|schedule, allow` for a door in
//!   office or scheduled office mode (not under lockdown); `p, !exempt, door, always,
//!   deny` for a door under lockdown;
//! - effect: allow-override with deny (`some allow && !some deny`);
//! - the matcher tests the door, the subject (`g()`), and the schedule through a custom
//!   function `sched(p.sched, r.today, r.yesterday, r.minute, r.date)`.
//!
//! RBAC has no credential attributes, so the adapter resolves the credential to its
//! owner with a `HashMap` and checks there what belongs to the credential itself:
//! unknown, revoked, unassigned, validity. Everything about people, groups, doors and
//! time is casbin's.

use crate::local::{SiteClock, credential_key, schedule_open, site_clocks};
use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{CoreApi, DefaultModel, Enforcer, MemoryAdapter, MgmtApi};
use keyway_core::{DoorMode, Record, Schedule};
use keyway_sim::GeneratedRequest;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Instant;

const MODEL: &str = r#"
[request_definition]
r = sub, obj, today, yesterday, minute, date

[policy_definition]
p = sub, obj, sched, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.obj == r.obj || p.obj == "*") && (p.sub == "*" || g(r.sub, p.sub) || (p.sub == "!exempt" && !g(r.sub, "exempt"))) && sched(p.sched, r.today, r.yesterday, r.minute, r.date)
"#;

/// The schedules `sched()` reads: a plain `fn` cannot capture, so they live here.
static SCHEDULES: RwLock<Vec<Option<Schedule>>> = RwLock::new(Vec::new());

fn sched(name: Dynamic, today: Dynamic, yesterday: Dynamic, minute: Dynamic, date: Dynamic) -> Dynamic {
    let name = casbin::function_map::dynamic_to_str(&name);
    if name == "always" {
        return true.into();
    }
    let Some(id) = name.strip_prefix('s').and_then(|s| s.parse::<usize>().ok()) else {
        return false.into();
    };
    let local = crate::local::Local {
        now: 0,
        today: today.as_int().map_or(-1, i64::from),
        yesterday: yesterday.as_int().map_or(-1, i64::from),
        minute: minute.as_int().map_or(-1, i64::from),
        date: date.as_int().map_or(-1, i64::from),
    };
    let schedules = SCHEDULES.read().unwrap();
    schedules
        .get(id)
        .and_then(Option::as_ref)
        .is_some_and(|s| schedule_open(s, &local))
        .into()
}

/// casbin's script engine counts in `i32`.
fn small(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(-1)
}

struct Credential {
    person: Option<String>,
    revoked: bool,
    valid_from: i64,
    valid_until: i64,
}

/// casbin, loaded with a population.
pub struct CasbinPeer {
    enforcer: Enforcer,
    credentials: HashMap<Box<[u8]>, Credential>,
    doors: Vec<Option<(String, u32)>>,
    clocks: Vec<Option<SiteClock>>,
    /// `p` lines.
    pub policy_count: usize,
    /// `g` lines.
    pub grouping_count: usize,
    /// Seconds to build the enforcer.
    pub build_seconds: f64,
}

impl CasbinPeer {
    /// Load `records`.
    pub fn new(records: &[Record]) -> CasbinPeer {
        let started = Instant::now();
        let mut schedules: Vec<Option<Schedule>> = Vec::new();
        let mut exempt_roles = HashSet::new();
        let mut site_lockdown = HashSet::new();
        for r in records {
            match r {
                Record::Schedule(s) => {
                    let i = s.id.0 as usize;
                    if schedules.len() <= i {
                        schedules.resize(i + 1, None);
                    }
                    schedules[i] = Some(s.schedule.clone());
                }
                Record::Roles(flags) => exempt_roles = flags.lockdown_exempt.iter().copied().collect(),
                Record::Site(s) if s.lockdown => {
                    site_lockdown.insert(s.id.0);
                }
                _ => {}
            }
        }
        *SCHEDULES.write().unwrap() = schedules;

        let mut p: Vec<Vec<String>> = vec![vec!["blocked".into(), "*".into(), "always".into(), "deny".into()]];
        let mut g: Vec<Vec<String>> = Vec::new();
        let mut seen = HashSet::new();
        let mut credentials = HashMap::new();
        let mut doors: Vec<Option<(String, u32)>> = Vec::new();
        for r in records {
            match r {
                Record::Group(grp) => {
                    let sched = grp
                        .schedule
                        .map_or_else(|| "always".to_owned(), |s| format!("s{}", s.0));
                    for d in &grp.doors {
                        if seen.insert((grp.id.0, d.0)) {
                            p.push(vec![
                                format!("g{}", grp.id.0),
                                format!("d{}", d.0),
                                sched.clone(),
                                "allow".into(),
                            ]);
                        }
                    }
                    for m in &grp.members {
                        g.push(vec![format!("p{}", m.0), format!("g{}", grp.id.0)]);
                    }
                }
                Record::Person(person) => {
                    if person.blocked {
                        g.push(vec![format!("p{}", person.id.0), "blocked".into()]);
                    }
                    if exempt_roles.contains(&person.role) {
                        g.push(vec![format!("p{}", person.id.0), "exempt".into()]);
                    }
                }
                Record::Door(d) => {
                    let name = format!("d{}", d.id.0);
                    let lockdown = d.lockdown || site_lockdown.contains(&d.site.0);
                    if lockdown {
                        p.push(vec!["!exempt".into(), name.clone(), "always".into(), "deny".into()]);
                    } else {
                        match d.mode {
                            DoorMode::Normal => {}
                            DoorMode::Office => p.push(vec!["*".into(), name.clone(), "always".into(), "allow".into()]),
                            DoorMode::OfficeScheduled(s) => {
                                p.push(vec!["*".into(), name.clone(), format!("s{}", s.0), "allow".into()]);
                            }
                        }
                    }
                    let i = d.id.0 as usize;
                    if doors.len() <= i {
                        doors.resize_with(i + 1, || None);
                    }
                    doors[i] = Some((name, d.site.0));
                }
                Record::Credential(c) => {
                    credentials.insert(
                        credential_key(c.kind, c.site.0, &c.secret).into_boxed_slice(),
                        Credential {
                            person: c.owner.map(|o| format!("p{}", o.0)),
                            revoked: c.revoked,
                            valid_from: c.valid_from.map_or(i64::MIN, |t| t.as_second()),
                            valid_until: c.valid_until.map_or(i64::MAX, |t| t.as_second()),
                        },
                    );
                }
                _ => {}
            }
        }
        let (policy_count, grouping_count) = (p.len(), g.len());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let enforcer = runtime.block_on(async {
            let model = DefaultModel::from_str(MODEL).await.unwrap();
            let mut e = Enforcer::new(model, MemoryAdapter::default()).await.unwrap();
            e.add_function("sched", OperatorFunction::Arg5(sched));
            e.add_policies(p).await.unwrap();
            e.add_grouping_policies(g).await.unwrap();
            e
        });
        CasbinPeer {
            enforcer,
            credentials,
            doors,
            clocks: site_clocks(records),
            policy_count,
            grouping_count,
            build_seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The whole request path: credential lookup and checks, the site's clock, enforce.
    pub fn decide(&self, r: &GeneratedRequest) -> bool {
        let (door, site) = self.doors[r.door.0 as usize].as_ref().unwrap();
        let key = credential_key(r.kind, *site, &r.secret);
        let Some(credential) = self.credentials.get(key.as_slice()) else {
            return false;
        };
        let now = r.at.as_second();
        if credential.revoked || now < credential.valid_from || now >= credential.valid_until {
            return false;
        }
        let Some(person) = credential.person.as_deref() else {
            return false;
        };
        let local = self.clocks[*site as usize].as_ref().unwrap().local(r.at);
        self.enforcer
            .enforce((
                person,
                door.as_str(),
                small(local.today),
                small(local.yesterday),
                small(local.minute),
                small(local.date),
            ))
            .unwrap()
    }
}
