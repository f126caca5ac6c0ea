//! Keyway's IQ link: the protocol door gateways (IQs) dial into, on a control port
//! (40000) and a bulk port (40001), both TLS with a client certificate per IQ.
//!
//! The protocol is specified in `PROTOCOL.md` beside this crate; this crate implements
//! both sides of it:
//!
//! - `wire`, `codec`, `message`: field encoding, framing (length-prefixed, checked
//!   before anything is allocated) and the messages;
//! - `conn`: sequence-checked reading, numbered and bounded writing;
//! - `pki` and `enrol`: the link and site CAs, enrolment codes, identities from
//!   certificates, the rustls configurations (ring provider);
//! - `server` and `session`: the listeners, session caps, the per-port session loops;
//! - `client`: [`IqClient`], a real client of the protocol, for `keyway iq-sim` and tests;
//! - `offline`: the IQ's offline list and its decisions without the network;
//! - `backend`: [`LinkBackend`], everything the link needs from the node;
//! - `node_backend`: [`NodeBackend`], the [`LinkBackend`] of a Keyway node, and
//!   [`LinkCommands`], the node's door commands over the link;
//! - `site_view` and `hub`: what the node knows of a site to build offline lists and
//!   pushes, and the one task per site that turns the change feed into every connected
//!   IQ's pushes;
//! - `sim`: a load generator of simulated IQs (decisions/s, latency percentiles).
//!
//! The sessions only see [`LinkBackend`], so they are tested against an in-memory fake;
//! `keyway serve` starts a [`LinkServer`] with a [`NodeBackend`].

pub mod backend;
pub mod client;
pub mod codec;
pub mod conn;
pub mod enrol;
mod hub;
pub mod message;
pub mod node_backend;
pub mod offline;
pub mod pki;
pub mod server;
mod session;
pub mod sim;
mod site_view;
pub mod wire;

pub use backend::{
    BackendError, CertIdentity, DecisionBatch, DecisionOutcome, DecisionRequest, EnrolmentGrant, FirmwareSlice,
    IqProfile, LinkBackend, OfflineCause, OfflineList, PushEvent, Report, SecurityEvent, Subscription, UploadedEntry,
};

pub use client::{ClientError, ClientEvent, IqClient, IqClientConfig, ReceivedOfflineList, enrol};
pub use message::Message;
pub use node_backend::{LinkCommands, NodeBackend, NodeBackendConfig};
pub use pki::IqCredentials;
pub use server::{LinkConfig, LinkError, LinkServer, SessionCounter};
