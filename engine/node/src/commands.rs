//! The interface between what admins ask of a door or an IQ (over the HTTP API) and the
//! IQ link that carries it. The node defines it so that the API and the link never
//! depend on each other: the link implements [`DoorCommands`] and installs itself with
//! [`crate::Node::set_door_commands`]; until it does, [`NoLink`] answers that nothing
//! can be delivered.

use keyway_core::{DoorId, IqId};
use std::future::Future;
use std::pin::Pin;

/// A command for a door, carried to its IQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoorCommand {
    /// Open the door once, now.
    RemoteOpen,
    /// The door's mode or lockdown changed; the IQ must apply it now.
    Refresh,
}

/// What became of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The IQ acknowledged it.
    Delivered,
    /// It could not be delivered, and why (no IQ, IQ offline, no link, timeout).
    NotDelivered {
        /// Why.
        reason: String,
    },
}

/// An IQ's connection state, as the link knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IqState {
    /// Whether a session is open now.
    pub online: bool,
    /// When it was last heard from, in seconds since the epoch.
    pub last_seen: Option<i64>,
    /// The firmware version it reported.
    pub firmware: Option<String>,
    /// The offline list last sent to it, if one was sent by this node.
    pub offline_list: Option<OfflineListSize>,
}

/// The size of an offline list sent to an IQ, against the IQ's capacity (the FAQ: 10,000
/// tags and 10,000 remote users). What did not fit is what the list's documented order
/// (keys with offline access first, then by credential id) left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OfflineListSize {
    /// The revision the list was built at.
    pub revision: u64,
    /// Tags in the list.
    pub tags: u32,
    /// Digital keys and PINs in the list.
    pub remote_users: u32,
    /// Tags that did not fit.
    pub tags_left_out: u32,
    /// Digital keys and PINs that did not fit.
    pub remote_users_left_out: u32,
}

/// A firmware image offered to an IQ: it fetches it over the link's bulk port, or over
/// HTTP with the download token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareOffer {
    pub version: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// The IQ's token for `GET /v1/firmware/download` (absent if none could be issued).
    pub download_token: Option<String>,
}

/// How long a firmware download token works.
pub const FIRMWARE_DOWNLOAD_TTL_SECS: i64 = 24 * 3600;

impl crate::Node {
    /// The offer of `file` (assigned to `iq`) to `iq`, with a fresh download token. A
    /// store failure leaves the token out: the bulk port still serves the file.
    pub async fn firmware_offer(&self, iq: IqId, file: keyway_store::FirmwareFile) -> FirmwareOffer {
        let now = jiff::Timestamp::now();
        let expires = now
            .checked_add(jiff::SignedDuration::from_secs(FIRMWARE_DOWNLOAD_TTL_SECS))
            .unwrap_or(jiff::Timestamp::MAX);
        let download_token = match self.store().devices().issue_firmware_download(iq, expires, now).await {
            Ok(issued) => Some(issued.secret),
            Err(e) => {
                tracing::warn!(%iq, error = %e, "no firmware download token issued");
                None
            }
        };
        FirmwareOffer {
            version: file.version,
            size: file.size,
            sha256: file.sha256,
            download_token,
        }
    }
}

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the link offers the rest of the node.
pub trait DoorCommands: Send + Sync + std::fmt::Debug {
    /// Deliver `command` for `door` to `iq` and wait for its acknowledgement.
    fn send(&self, iq: IqId, door: DoorId, command: DoorCommand) -> BoxFuture<'_, CommandOutcome>;
    /// The state of `iq`.
    fn state(&self, iq: IqId) -> IqState;
    /// Close every session `iq` holds on this node at once (its certificate was revoked:
    /// the IQ was removed or reset). How many were closed.
    fn close_sessions(&self, iq: IqId) -> usize;
    /// Tell `iq`, if it has a session on this node, that it should install `offer`.
    /// Whether a session took the offer (the link also offers an IQ its assigned
    /// firmware whenever it connects running another version).
    fn offer_firmware(&self, iq: IqId, offer: &FirmwareOffer) -> bool;
}

/// The stand-in until the link is installed: nothing is delivered, every IQ is offline.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLink;

impl DoorCommands for NoLink {
    fn send(&self, _iq: IqId, _door: DoorId, _command: DoorCommand) -> BoxFuture<'_, CommandOutcome> {
        Box::pin(async {
            CommandOutcome::NotDelivered {
                reason: "the IQ link is not running on this node".to_owned(),
            }
        })
    }

    fn state(&self, _iq: IqId) -> IqState {
        IqState::default()
    }

    fn close_sessions(&self, _iq: IqId) -> usize {
        0
    }

    fn offer_firmware(&self, _iq: IqId, _offer: &FirmwareOffer) -> bool {
        false
    }
}
