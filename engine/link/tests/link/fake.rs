//! An in-memory [`LinkBackend`]: IQs, enrolment codes, a toy decision rule, an entries
//! log keyed by (iq, seq), push channels the tests write into, and every report kept.

use jiff::Timestamp;
use keyway_core::{CredentialKind, DoorId, Effect, IqId, PersonId, Revision, SiteId};
use keyway_link::message::{OfflineEntry, OfflineGrant, OfflinePeriod, OfflineSchedule, PinVerdict};
use keyway_link::{
    BackendError, CertIdentity, DecisionBatch, DecisionOutcome, DecisionRequest, EnrolmentGrant, FirmwareSlice,
    IqProfile, LinkBackend, OfflineList, PushEvent, Report, Subscription, UploadedEntry, enrol,
};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const GOOD_TAG: &[u8] = &[0x04, 0xa1, 0xb2, 0xc3];
pub const PIN: &[u8] = b"1234";
pub const FIRMWARE: &str = "2.5.0";

struct Iq {
    site: SiteId,
    doors: Vec<DoorId>,
    serial: Option<String>,
}

struct Code {
    grant: EnrolmentGrant,
    expires: Instant,
    used: bool,
}

#[derive(Default)]
struct State {
    iqs: HashMap<IqId, Iq>,
    codes: HashMap<String, Code>,
    entries: HashMap<(IqId, u64), UploadedEntry>,
    entry_writes: usize,
    reports: Vec<(IqId, Report)>,
    subscribers: HashMap<IqId, mpsc::Sender<PushEvent>>,
    revision: u64,
    offline_entries: usize,
}

#[derive(Default)]
pub struct Fake {
    state: Mutex<State>,
    pub firmware: Vec<u8>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            state: Mutex::new(State {
                revision: 100,
                offline_entries: 3,
                ..State::default()
            }),
            firmware: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Registers an IQ and returns a fresh enrolment code for it, valid for `valid`.
    pub fn register(&self, site: u32, iq: u32, doors: &[u32], valid: Duration) -> String {
        let code = enrol::new_code();
        let mut state = self.state();
        state.iqs.insert(
            IqId(iq),
            Iq {
                site: SiteId(site),
                doors: doors.iter().copied().map(DoorId).collect(),
                serial: None,
            },
        );
        let expires = Instant::now().checked_add(valid).unwrap_or_else(Instant::now);
        let expires = if valid.is_zero() {
            Instant::now() - Duration::from_secs(1)
        } else {
            expires
        };
        state.codes.insert(
            enrol::hash_code(&code),
            Code {
                grant: EnrolmentGrant {
                    site: SiteId(site),
                    iq: IqId(iq),
                },
                expires,
                used: false,
            },
        );
        code
    }

    /// Removes the IQ's certificate and tells its sessions.
    pub fn revoke(&self, iq: u32) {
        let mut state = self.state();
        if let Some(entry) = state.iqs.get_mut(&IqId(iq)) {
            entry.serial = None;
        }
        if let Some(tx) = state.subscribers.get(&IqId(iq)) {
            let _ = tx.try_send(PushEvent::Revoked);
        }
    }

    /// Sends a push to the IQ's subscription.
    pub async fn push(&self, iq: u32, event: PushEvent) {
        let tx = self.state().subscribers.get(&IqId(iq)).cloned().expect("no subscriber");
        tx.send(event).await.unwrap();
    }

    pub fn set_offline_entries(&self, n: usize) {
        self.state().offline_entries = n;
    }

    pub fn entries(&self, iq: u32) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .state()
            .entries
            .keys()
            .filter(|(i, _)| i.get() == iq)
            .map(|(_, s)| *s)
            .collect();
        seqs.sort_unstable();
        seqs
    }

    pub fn entry_writes(&self) -> usize {
        self.state().entry_writes
    }

    pub fn reports(&self, iq: u32) -> Vec<Report> {
        self.state()
            .reports
            .iter()
            .filter(|(i, _)| i.get() == iq)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Waits until a report matching `pred` arrives for `iq`.
    pub async fn wait_report(&self, iq: u32, what: &str, pred: impl Fn(&Report) -> bool) -> Report {
        for _ in 0..500 {
            if let Some(report) = self.reports(iq).into_iter().find(|r| pred(r)) {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no report `{what}` for iq {iq}: {:?}", self.reports(iq));
    }
}

impl LinkBackend for Fake {
    async fn authenticate(&self, identity: &CertIdentity) -> Result<IqProfile, BackendError> {
        let state = self.state();
        let iq = state.iqs.get(&identity.iq).ok_or(BackendError::Refused)?;
        if iq.site != identity.site || iq.serial.as_deref() != Some(identity.serial.as_str()) {
            return Err(BackendError::Refused);
        }
        Ok(IqProfile {
            site: iq.site,
            iq: identity.iq,
            doors: iq.doors.clone(),
        })
    }

    async fn redeem_enrolment_code(&self, code: &str) -> Result<EnrolmentGrant, BackendError> {
        let mut state = self.state();
        let code = state
            .codes
            .get_mut(&enrol::hash_code(code))
            .ok_or(BackendError::Refused)?;
        if code.used || code.expires <= Instant::now() {
            return Err(BackendError::Refused);
        }
        code.used = true;
        Ok(code.grant)
    }

    async fn certificate_issued(&self, iq: IqId, serial: &str, _not_after: Timestamp) -> Result<(), BackendError> {
        let mut state = self.state();
        state.iqs.get_mut(&iq).ok_or(BackendError::Refused)?.serial = Some(serial.to_owned());
        Ok(())
    }

    async fn decide(&self, _iq: IqId, requests: &[DecisionRequest<'_>]) -> Result<DecisionBatch, BackendError> {
        let revision = Revision(self.state().revision);
        let outcomes = requests
            .iter()
            .map(|r| {
                if r.kind == Some(CredentialKind::Tag) && r.secret == GOOD_TAG {
                    DecisionOutcome {
                        effect: Effect::Allow,
                        reason: Cow::Borrowed("granted"),
                    }
                } else {
                    DecisionOutcome {
                        effect: Effect::Deny,
                        reason: Cow::Borrowed("unknown_credential"),
                    }
                }
            })
            .collect();
        Ok(DecisionBatch { revision, outcomes })
    }

    async fn record_entries(&self, iq: IqId, entries: &[UploadedEntry]) -> Result<(), BackendError> {
        let mut state = self.state();
        for entry in entries {
            if let std::collections::hash_map::Entry::Vacant(slot) = state.entries.entry((iq, entry.seq)) {
                slot.insert(entry.clone());
                state.entry_writes += 1;
            }
        }
        Ok(())
    }

    async fn subscribe(&self, iq: IqId, since: Revision) -> Result<Subscription, BackendError> {
        let (tx, events) = mpsc::channel(64);
        let mut state = self.state();
        state.subscribers.insert(iq, tx);
        Ok(Subscription {
            revision: Revision(state.revision),
            resync: since.get() + 50 < state.revision,
            events,
        })
    }

    async fn offline_list(&self, _iq: IqId) -> Result<OfflineList, BackendError> {
        let state = self.state();
        let entries = (0..state.offline_entries)
            .map(|i| OfflineEntry {
                credential: i as u32,
                kind: CredentialKind::Tag,
                secret: (i as u64).to_be_bytes().to_vec(),
                person: Some(i as u32),
                offline_access: i % 2 == 0,
                valid_from: None,
                valid_until: Some(1_900_000_000_000),
                grants: vec![
                    OfflineGrant {
                        door: 10,
                        schedule: Some(1),
                    },
                    OfflineGrant {
                        door: 11,
                        schedule: None,
                    },
                ],
            })
            .collect();
        Ok(OfflineList {
            revision: Revision(state.revision),
            time_zone: "Europe/Madrid".into(),
            schedules: vec![OfflineSchedule {
                id: 1,
                periods: vec![OfflinePeriod {
                    days: 0b0001_1111,
                    start: 480,
                    end: 1080,
                }],
                from: None,
                until: Some(20271231),
            }],
            holidays: vec![20261225],
            entries,
        })
    }

    async fn check_pin(&self, _iq: IqId, person: PersonId, pin: &[u8]) -> Result<PinVerdict, BackendError> {
        Ok(match (person.get(), pin == PIN) {
            (1, true) => PinVerdict::Correct,
            (1, false) => PinVerdict::Wrong,
            _ => PinVerdict::NotActivated,
        })
    }

    async fn firmware_chunk(
        &self,
        _iq: IqId,
        version: &str,
        offset: u64,
        max_len: u32,
    ) -> Result<FirmwareSlice, BackendError> {
        if version != FIRMWARE {
            return Err(BackendError::NotFound);
        }
        let start = (offset as usize).min(self.firmware.len());
        let end = (start + max_len as usize).min(self.firmware.len());
        Ok(FirmwareSlice {
            size: self.firmware.len() as u64,
            sha256: Sha256::digest(&self.firmware).into(),
            data: self.firmware[start..end].to_vec(),
        })
    }

    async fn report(&self, iq: IqId, report: Report) -> Result<(), BackendError> {
        self.state().reports.push((iq, report));
        Ok(())
    }
}
