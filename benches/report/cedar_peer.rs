//! Cedar as a peer: the same population as entities and policies, the same requests.
//!
//! Model:
//! - `Keyway::Credential` entities with `revoked`, optional `owner` (a `Keyway::Person`),
//!   `valid_from` and `valid_until` (Unix seconds); a credential's parent is its owner.
//! - `Keyway::Person` with `blocked` and `exempt` (its role passes lockdown); its
//!   parents are its access groups (`Keyway::Group`).
//! - `Keyway::Door` with `lockdown` (door or site) and `office`; its parents are one
//!   `Keyway::DoorSet` per group that opens it, and `Keyway::OfficeSet` for a door in
//!   scheduled office mode.
//! - forbid policies: revoked, blocked owner, not yet valid, expired, lockdown for
//!   non-exempt people. Permit policies: one per access group
//!   (`principal in Group, resource in DoorSet`, `when` its schedule), office mode,
//!   scheduled office mode.
//! - Context: `now`, and the site's wall clock (`today`, `yesterday` as day types with
//!   7 = holiday, `minute`, `date`), computed by the adapter since Cedar has no zones.
//! - The adapter maps the presented bytes (kind, door's site, secret) to the credential's
//!   entity uid with a `HashMap`, as Keyway's FST does.
//!
//! Two policy-set variants: "global" (every policy, as one set) and "sliced" (per door:
//! the five forbids, the office permits that name the door, and the permits of the groups
//! that open it), which is how one would deploy Cedar at this scale.

use crate::local::{SiteClock, cedar_condition, credential_key, site_clocks};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression,
};
use jiff::Timestamp;
use keyway_core::{DoorMode, Record};
use keyway_sim::GeneratedRequest;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Instant;

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(type_name).unwrap(), EntityId::new(id))
}

struct DoorEntry {
    uid: EntityUid,
    site: u32,
}

/// A request already mapped to Cedar's terms, for timing `is_authorized` alone.
pub struct Prepared {
    request: Request,
    door: u32,
}

/// Cedar, loaded with a population.
pub struct CedarPeer {
    authorizer: Authorizer,
    entities: Entities,
    global: PolicySet,
    sliced: HashMap<u32, PolicySet>,
    credentials: HashMap<Box<[u8]>, EntityUid>,
    doors: Vec<Option<DoorEntry>>,
    clocks: Vec<Option<SiteClock>>,
    action: EntityUid,
    unknown: EntityUid,
    /// How many policies the global set holds.
    pub policy_count: usize,
    /// How many entities.
    pub entity_count: usize,
    /// Seconds to build the entities (with Cedar's transitive closure).
    pub entities_seconds: f64,
    /// Seconds to parse and assemble the policy sets.
    pub policies_seconds: f64,
}

impl CedarPeer {
    /// Load `records`.
    pub fn new(records: &[Record]) -> CedarPeer {
        let started = Instant::now();
        let mut exempt_roles = HashSet::new();
        let mut site_lockdown = HashSet::new();
        for r in records {
            match r {
                Record::Roles(flags) => exempt_roles = flags.lockdown_exempt.iter().copied().collect(),
                Record::Site(s) if s.lockdown => {
                    site_lockdown.insert(s.id.0);
                }
                _ => {}
            }
        }
        let mut person_parents: HashMap<u32, Vec<EntityUid>> = HashMap::new();
        let mut door_parents: HashMap<u32, Vec<EntityUid>> = HashMap::new();
        let mut entities = Vec::new();
        let mut policies: Vec<(String, String)> = Vec::new();
        let mut door_policies: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut schedule_condition: HashMap<u32, String> = HashMap::new();
        for r in records {
            if let Record::Schedule(s) = r {
                schedule_condition.insert(s.id.0, cedar_condition(&s.schedule));
            }
        }
        // The five forbids, in every set.
        let forbids = [
            "forbid(principal, action, resource) when { principal.revoked };",
            "forbid(principal, action, resource) when { principal has owner && principal.owner.blocked };",
            "forbid(principal, action, resource) when { principal has valid_from && context.now < principal.valid_from };",
            "forbid(principal, action, resource) when { principal has valid_until && context.now >= principal.valid_until };",
            "forbid(principal, action, resource) when { resource.lockdown && !(principal has owner && principal.owner.exempt) };",
        ];
        for (i, f) in forbids.iter().enumerate() {
            policies.push((format!("forbid{i}"), (*f).to_owned()));
        }
        policies.push((
            "office".to_owned(),
            "permit(principal, action == Keyway::Action::\"open\", resource) when { resource.office && !resource.lockdown && principal has owner };".to_owned(),
        ));
        let office_policy = policies.len() - 1;
        let mut office_scheduled: HashMap<u32, usize> = HashMap::new();
        for r in records {
            match r {
                Record::Group(g) => {
                    for m in &g.members {
                        person_parents
                            .entry(m.0)
                            .or_default()
                            .push(uid("Keyway::Group", &g.id.0.to_string()));
                    }
                    let set = uid("Keyway::DoorSet", &g.id.0.to_string());
                    let when = g
                        .schedule
                        .map_or_else(|| "true".to_owned(), |s| schedule_condition[&s.0].clone());
                    policies.push((
                        format!("group{}", g.id.0),
                        format!(
                            "permit(principal in Keyway::Group::\"{0}\", action == Keyway::Action::\"open\", resource in Keyway::DoorSet::\"{0}\") when {{ {when} }};",
                            g.id.0
                        ),
                    ));
                    let index = policies.len() - 1;
                    for d in &g.doors {
                        door_parents.entry(d.0).or_default().push(set.clone());
                        door_policies.entry(d.0).or_default().push(index);
                    }
                }
                Record::Door(d) => {
                    if let DoorMode::OfficeScheduled(s) = d.mode {
                        let index = *office_scheduled.entry(s.0).or_insert_with(|| {
                            policies.push((
                                format!("office_schedule{}", s.0),
                                format!(
                                    "permit(principal, action == Keyway::Action::\"open\", resource in Keyway::OfficeSet::\"{}\") when {{ !resource.lockdown && principal has owner && {} }};",
                                    s.0, schedule_condition[&s.0]
                                ),
                            ));
                            policies.len() - 1
                        });
                        door_parents
                            .entry(d.id.0)
                            .or_default()
                            .push(uid("Keyway::OfficeSet", &s.0.to_string()));
                        door_policies.entry(d.id.0).or_default().push(index);
                    }
                    if d.mode == DoorMode::Office {
                        door_policies.entry(d.id.0).or_default().push(office_policy);
                    }
                }
                _ => {}
            }
        }

        let mut credentials = HashMap::new();
        let mut doors: Vec<Option<DoorEntry>> = Vec::new();
        for r in records {
            match r {
                Record::Person(p) => {
                    let exempt = exempt_roles.contains(&p.role);
                    let attrs = HashMap::from([
                        ("blocked".to_owned(), RestrictedExpression::new_bool(p.blocked)),
                        ("exempt".to_owned(), RestrictedExpression::new_bool(exempt)),
                    ]);
                    let parents: HashSet<EntityUid> =
                        person_parents.remove(&p.id.0).unwrap_or_default().into_iter().collect();
                    entities.push(Entity::new(uid("Keyway::Person", &p.id.0.to_string()), attrs, parents).unwrap());
                }
                Record::Credential(c) => {
                    let me = uid("Keyway::Credential", &c.id.0.to_string());
                    let mut attrs = HashMap::from([("revoked".to_owned(), RestrictedExpression::new_bool(c.revoked))]);
                    let mut parents = HashSet::new();
                    if let Some(owner) = c.owner {
                        let person = uid("Keyway::Person", &owner.0.to_string());
                        attrs.insert("owner".to_owned(), RestrictedExpression::new_entity_uid(person.clone()));
                        parents.insert(person);
                    }
                    if let Some(t) = c.valid_from {
                        attrs.insert("valid_from".to_owned(), RestrictedExpression::new_long(t.as_second()));
                    }
                    if let Some(t) = c.valid_until {
                        attrs.insert("valid_until".to_owned(), RestrictedExpression::new_long(t.as_second()));
                    }
                    entities.push(Entity::new(me.clone(), attrs, parents).unwrap());
                    credentials.insert(credential_key(c.kind, c.site.0, &c.secret).into_boxed_slice(), me);
                }
                Record::Door(d) => {
                    let me = uid("Keyway::Door", &d.id.0.to_string());
                    let attrs = HashMap::from([
                        (
                            "lockdown".to_owned(),
                            RestrictedExpression::new_bool(d.lockdown || site_lockdown.contains(&d.site.0)),
                        ),
                        (
                            "office".to_owned(),
                            RestrictedExpression::new_bool(d.mode == DoorMode::Office),
                        ),
                    ]);
                    let parents: HashSet<EntityUid> =
                        door_parents.remove(&d.id.0).unwrap_or_default().into_iter().collect();
                    entities.push(Entity::new(me.clone(), attrs, parents).unwrap());
                    let i = d.id.0 as usize;
                    if doors.len() <= i {
                        doors.resize_with(i + 1, || None);
                    }
                    doors[i] = Some(DoorEntry {
                        uid: me,
                        site: d.site.0,
                    });
                }
                _ => {}
            }
        }
        let entity_count = entities.len();
        let entities = Entities::from_entities(entities, None).unwrap();
        let entities_seconds = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let parsed: Vec<Policy> = policies
            .iter()
            .map(|(id, text)| Policy::parse(Some(PolicyId::new(id)), text).unwrap())
            .collect();
        let mut global = PolicySet::new();
        for p in &parsed {
            global.add(p.clone()).unwrap();
        }
        let mut sliced = HashMap::new();
        for (door, indexes) in door_policies {
            let mut set = PolicySet::new();
            for p in parsed.iter().take(forbids.len()) {
                set.add(p.clone()).unwrap();
            }
            let mut seen = HashSet::new();
            for i in indexes {
                if seen.insert(i) {
                    set.add(parsed[i].clone()).unwrap();
                }
            }
            sliced.insert(door, set);
        }
        let mut forbid_only = PolicySet::new();
        for p in parsed.iter().take(forbids.len()) {
            forbid_only.add(p.clone()).unwrap();
        }
        for (i, d) in doors.iter().enumerate() {
            if d.is_some() {
                sliced.entry(i as u32).or_insert_with(|| forbid_only.clone());
            }
        }
        let policies_seconds = started.elapsed().as_secs_f64();

        CedarPeer {
            authorizer: Authorizer::new(),
            entities,
            global,
            sliced,
            credentials,
            doors,
            clocks: site_clocks(records),
            action: uid("Keyway::Action", "open"),
            unknown: uid("Keyway::Credential", "unknown"),
            policy_count: parsed.len(),
            entity_count,
            entities_seconds,
            policies_seconds,
        }
    }

    /// The request in Cedar's terms: credential lookup, the site's clock, the context.
    pub fn prepare(&self, door: u32, kind: keyway_core::CredentialKind, secret: &[u8], at: Timestamp) -> Prepared {
        let entry = self.doors[door as usize].as_ref().unwrap();
        let key = credential_key(kind, entry.site, secret);
        let principal = self.credentials.get(key.as_slice()).unwrap_or(&self.unknown).clone();
        let local = self.clocks[entry.site as usize].as_ref().unwrap().local(at);
        let context = Context::from_pairs([
            ("now".to_owned(), RestrictedExpression::new_long(local.now)),
            ("today".to_owned(), RestrictedExpression::new_long(local.today)),
            ("yesterday".to_owned(), RestrictedExpression::new_long(local.yesterday)),
            ("minute".to_owned(), RestrictedExpression::new_long(local.minute)),
            ("date".to_owned(), RestrictedExpression::new_long(local.date)),
        ])
        .unwrap();
        let request = Request::new(principal, self.action.clone(), entry.uid.clone(), context, None).unwrap();
        Prepared { request, door }
    }

    /// `is_authorized` alone, on a prepared request; `sliced` picks the door's set.
    pub fn authorize(&self, prepared: &Prepared, sliced: bool) -> bool {
        let set = if sliced {
            &self.sliced[&prepared.door]
        } else {
            &self.global
        };
        self.authorizer
            .is_authorized(&prepared.request, set, &self.entities)
            .decision()
            == cedar_policy::Decision::Allow
    }

    /// The whole request path: prepare, then authorize.
    pub fn decide(&self, r: &GeneratedRequest, sliced: bool) -> bool {
        let prepared = self.prepare(r.door.0, r.kind, &r.secret, r.at);
        self.authorize(&prepared, sliced)
    }
}
