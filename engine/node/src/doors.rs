//! What an admin asks of a door beyond the decision model, and what a door or an IQ
//! reports back: door commands addressed by door (the node finds the door's IQ), remote
//! openings written to the entries log, incidents, and passages (what actually happened
//! after a decision, which door rules such as anti-passback and occupancy count).
//!
//! A command is always answered: delivered, or not delivered and why (the door has no
//! IQ, the IQ is offline, the link is not running). A remote opening is logged and
//! audited whatever became of it, so the log says who tried to open which door.

use crate::commands::{CommandOutcome, DoorCommand};
use crate::error::NodeError;
use crate::node::Node;
use jiff::Timestamp;
use keyway_core::{DoorId, IqId, PersonId, Presented, SiteId};
use keyway_plugin_host::{Direction, Passage};
use keyway_store::{Entry, Incident, Method, NewIncident, StoreError};
use std::borrow::Cow;

/// The reason code of a remote opening the IQ carried out.
pub const REMOTE_OPEN: &str = "remote_open";
/// The reason code of a remote opening that did not reach the door.
pub const REMOTE_OPEN_NOT_DELIVERED: &str = "remote_open_not_delivered";

/// A passage as a door's IQ reports it: what was read, and whether the door opened.
#[derive(Clone, Copy, Debug)]
pub struct PassageReport<'a> {
    pub door: DoorId,
    /// The credential read, when the IQ knows it (a kind this version does not know is
    /// `None`: the passage counts for nobody).
    pub presented: Option<Presented<'a>>,
    /// When.
    pub at: Timestamp,
    /// Which way the reader faces.
    pub direction: Direction,
    /// Whether the door actually opened.
    pub opened: bool,
}

/// A remote opening, as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteOpening {
    /// What became of the command.
    pub outcome: CommandOutcome,
    /// The revision the door's state was read on.
    pub revision: u64,
}

impl Node {
    /// Send `command` to the IQ `door` is paired with, and wait for the outcome. A door
    /// without an IQ, or an unknown one, is answered as not delivered.
    pub async fn door_command(&self, door: DoorId, command: DoorCommand) -> CommandOutcome {
        let iq = self.snapshot().load().door_record(door).and_then(|d| d.iq);
        match iq {
            Some(iq) => self.door_commands().send(iq, door, command).await,
            None => CommandOutcome::NotDelivered {
                reason: "the door is not paired with an IQ".to_owned(),
            },
        }
    }

    /// Open `door` once, now, on behalf of `person` (the caller's person record on the
    /// site, if they have one), as `actor`: the command goes to the door's IQ, the
    /// entries log gets a remote opening (allowed only if the IQ carried it out) once it
    /// is committed, and the audit log gets the attempt and its outcome.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (as [`NodeError::Store`]) for a door of another site or
    /// none; store errors while logging.
    pub async fn remote_open(
        &self,
        actor: &str,
        site: SiteId,
        door: DoorId,
        person: Option<PersonId>,
    ) -> Result<RemoteOpening, NodeError> {
        let revision = {
            let snapshot = self.snapshot().load();
            if snapshot.door_site(door) != Some(site) {
                return Err(NodeError::Store(StoreError::NotFound {
                    entity: format!("door:{} of site:{}", door.0, site.0),
                }));
            }
            snapshot.revision()
        };
        let outcome = self.door_command(door, DoorCommand::RemoteOpen).await;
        let delivered = outcome == CommandOutcome::Delivered;
        let entry = Entry {
            site,
            at: Timestamp::now(),
            door,
            person,
            credential: None,
            method: Method::Remote,
            allowed: delivered,
            reason: Cow::Borrowed(if delivered {
                REMOTE_OPEN
            } else {
                REMOTE_OPEN_NOT_DELIVERED
            }),
            revision,
            iq: None,
            rule: None,
        };
        self.store().entries().append_durable(entry).await?;
        let detail = serde_json::json!({
            "site": site.0,
            "door": door.0,
            "person": person.map(|p| p.0),
            "delivered": delivered,
            "reason": match &outcome {
                CommandOutcome::Delivered => None,
                CommandOutcome::NotDelivered { reason } => Some(reason.as_str()),
            },
        });
        self.store()
            .audit_action(
                actor,
                "remote_open",
                &door.to_string(),
                &detail.to_string(),
                Timestamp::now(),
            )
            .await?;
        Ok(RemoteOpening {
            outcome,
            revision: revision.0,
        })
    }

    /// Record an incident a door or an IQ reported (or the node noticed), and queue its
    /// notifications. The door and the IQ, when named, must belong to the site as this
    /// node's snapshot knows it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for a door or IQ of another site or none; store errors.
    pub async fn raise_incident(&self, actor: &str, incident: NewIncident) -> Result<Incident, NodeError> {
        {
            let snapshot = self.snapshot().load();
            if let Some(door) = incident.door
                && snapshot.door_site(door) != Some(incident.site)
            {
                return Err(NodeError::Store(StoreError::NotFound {
                    entity: format!("door:{} of site:{}", door.0, incident.site.0),
                }));
            }
            if let Some(iq) = incident.iq
                && snapshot.iq_record(iq).is_none_or(|r| r.site != incident.site)
            {
                return Err(NodeError::Store(StoreError::NotFound {
                    entity: format!("iq:{} of site:{}", iq.0, incident.site.0),
                }));
            }
        }
        Ok(self
            .store()
            .incidents()
            .raise(actor, &incident, Timestamp::now())
            .await?)
    }

    /// Tell the door's rules of a passage (each rule that exports the passage hook, in
    /// chain order, with its states changed atomically). The person is the holder of the
    /// credential read, on the door's site; an unknown or unassigned credential passes
    /// for nobody. A rule that fails is logged and leaves its states as they were; how
    /// many failed is answered.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (as [`NodeError::Store`]) for a door this node does not
    /// know.
    pub fn passage(&self, report: &PassageReport<'_>) -> Result<usize, NodeError> {
        let (site, person) = {
            let snapshot = self.snapshot().load();
            let site = snapshot.door_site(report.door).ok_or_else(|| {
                NodeError::Store(StoreError::NotFound {
                    entity: format!("door:{}", report.door.0),
                })
            })?;
            let person = report.presented.and_then(|p| {
                snapshot
                    .credential_by_secret(site, p.kind, p.secret)
                    .and_then(|c| c.owner)
            });
            (site, person)
        };
        let failed = self.policy().passage(&Passage {
            door: report.door,
            site,
            person,
            at: report.at,
            direction: report.direction,
            opened: report.opened,
        });
        for (rule, error) in &failed {
            tracing::warn!(door = %report.door, rule = %rule, error = %error, "a door rule failed on a passage");
        }
        Ok(failed.len())
    }

    /// The site of `iq`, as this node's snapshot knows it.
    #[must_use]
    pub fn iq_site(&self, iq: IqId) -> Option<SiteId> {
        self.snapshot().load().iq_record(iq).map(|r| r.site)
    }
}
