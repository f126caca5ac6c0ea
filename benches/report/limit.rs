//! The limit: the least any decision has to do, on the same data and requests.
//!
//! One lookup of the presented key in a plain hash map of the same keys (std `HashMap`
//! with a fast multiplicative hasher, not SipHash, so that the floor is not inflated by
//! hashing), then the dependent reads any decision needs at minimum: the door's row (for
//! its site, part of the key), the credential's row (owner, validity) and its owner's row
//! (blocked, one group), all in flat vectors indexed by id. It answers "the owner is in
//! the door's first group and the credential is valid", which is not Keyway's answer
//! (no schedules, no modes, no revocations): it is the cost floor of the memory reads,
//! which this machine cannot go under.

use jiff::Timestamp;
use keyway_core::{CredentialKind, Record};
use keyway_sim::GeneratedRequest;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

#[derive(Clone, Copy, Default)]
pub struct Fast;

pub struct FastHasher(u64);

impl BuildHasher for Fast {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    site: u32,
    kind: u8,
    len: u8,
    secret: [u8; 16],
}

fn key(site: u32, kind: CredentialKind, secret: &[u8]) -> Option<Key> {
    let mut bytes = [0u8; 16];
    bytes.get_mut(..secret.len())?.copy_from_slice(secret);
    Some(Key {
        site,
        kind: kind as u8,
        len: secret.len() as u8,
        secret: bytes,
    })
}

#[derive(Clone, Copy, Default)]
struct DoorRow {
    site: u32,
    group: u32,
}

#[derive(Clone, Copy)]
struct CredentialRow {
    person: u32,
    valid_from: i64,
    valid_until: i64,
}

#[derive(Clone, Copy, Default)]
struct PersonRow {
    blocked: bool,
    group: u32,
}

/// The floor's tables.
pub struct Limit {
    doors: Vec<DoorRow>,
    index: HashMap<Key, u32, Fast>,
    credentials: Vec<CredentialRow>,
    people: Vec<PersonRow>,
}

impl Limit {
    pub fn new(records: &[Record]) -> Limit {
        let mut doors = Vec::new();
        let mut people = Vec::new();
        let mut index = HashMap::with_hasher(Fast);
        let mut credentials = Vec::new();
        for r in records {
            match r {
                Record::Door(d) => {
                    let i = d.id.0 as usize;
                    if doors.len() <= i {
                        doors.resize(i + 1, DoorRow::default());
                    }
                    doors[i].site = d.site.0;
                }
                Record::Person(p) => {
                    let i = p.id.0 as usize;
                    if people.len() <= i {
                        people.resize(i + 1, PersonRow::default());
                    }
                    people[i].blocked = p.blocked;
                }
                _ => {}
            }
        }
        for r in records {
            match r {
                Record::Group(g) => {
                    for d in &g.doors {
                        doors[d.0 as usize].group = g.id.0;
                    }
                    for p in &g.members {
                        people[p.0 as usize].group = g.id.0;
                    }
                }
                Record::Credential(c) => {
                    if let Some(k) = key(c.site.0, c.kind, &c.secret) {
                        index.insert(k, credentials.len() as u32);
                        credentials.push(CredentialRow {
                            person: c.owner.map_or(u32::MAX, |p| p.0),
                            valid_from: c.valid_from.map_or(i64::MIN, |t| t.as_second()),
                            valid_until: c.valid_until.map_or(i64::MAX, |t| t.as_second()),
                        });
                    }
                }
                _ => {}
            }
        }
        Limit {
            doors,
            index,
            credentials,
            people,
        }
    }

    /// The floor's answer to one request.
    #[inline]
    pub fn probe(&self, door: u32, kind: CredentialKind, secret: &[u8], at: Timestamp) -> bool {
        let Some(d) = self.doors.get(door as usize) else {
            return false;
        };
        let Some(k) = key(d.site, kind, secret) else {
            return false;
        };
        let Some(&ordinal) = self.index.get(&k) else {
            return false;
        };
        let Some(c) = self.credentials.get(ordinal as usize) else {
            return false;
        };
        let Some(p) = self.people.get(c.person as usize) else {
            return false;
        };
        let now = at.as_second();
        !p.blocked && c.valid_from <= now && now < c.valid_until && p.group == d.group
    }

    pub fn probe_request(&self, r: &GeneratedRequest) -> bool {
        self.probe(r.door.0, r.kind, &r.secret, r.at)
    }
}
