//! The messages of PROTOCOL.md section 6, each with its body encoding and decoding.
//!
//! These are the wire types: plain data, no behaviour. [`Message::encode_body`] and
//! [`Message::decode`] are exact inverses for every value a peer may send (the codec
//! tests check it with proptest), and decoding checks every limit before it allocates.

use crate::wire::{DecodeError, EncodeError, Reader, Writer};
use bytes::BytesMut;
use keyway_core::{CredentialKind, Effect};
pub use keyway_node::Direction;
use thiserror::Error;

/// The protocol versions this implementation speaks.
pub const VERSION_MIN: u16 = 1;
/// The highest protocol version this implementation speaks. Version 2 added the reader's
/// direction to `DECIDE` items and the `PASSAGE` message.
pub const VERSION_MAX: u16 = 2;

/// Most requests in one `DECIDE`.
pub const MAX_DECIDE_ITEMS: usize = 64;
/// Most entries in one `ENTRIES` upload.
pub const MAX_ENTRY_ITEMS: usize = 256;
/// Longest credential secret on the wire.
pub const MAX_SECRET: usize = 32;
/// Longest PIN.
pub const MAX_PIN: usize = 8;
/// Longest reason code.
pub const MAX_REASON: usize = 64;
/// Longest short string (versions, codes, time zones).
pub const MAX_SHORT: usize = 64;
/// The longest firmware download token (`FIRMWARE_AVAILABLE`).
pub const MAX_DOWNLOAD_TOKEN: usize = 128;
/// Longest free text (error messages, incident details).
pub const MAX_TEXT: usize = 256;
/// Longest DER blob (CSR, certificate).
pub const MAX_DER: usize = 4_096;
/// Most doors of one IQ.
pub const MAX_DOORS: usize = 1_024;
/// Most items in one `REVOCATION`.
pub const MAX_REVOCATION_ITEMS: usize = 1_024;
/// Most entries per `OFFLINE_LIST_CHUNK`, and upserts or removals per `OFFLINE_DELTA`.
pub const MAX_CHUNK_ENTRIES: usize = 1_000;
/// Most grants of one offline entry.
pub const MAX_GRANTS: usize = 256;
/// Most schedules in an offline list.
pub const MAX_SCHEDULES: usize = 1_024;
/// Most periods of one schedule.
pub const MAX_PERIODS: usize = 8;
/// Most holidays in an offline list.
pub const MAX_HOLIDAYS: usize = 1_024;
/// Largest firmware chunk.
pub const MAX_FIRMWARE_CHUNK: usize = 524_288;

/// The message type numbers.
pub mod types {
    /// `HELLO`
    pub const HELLO: u16 = 0x0001;
    /// `WELCOME`
    pub const WELCOME: u16 = 0x0002;
    /// `ENROL`
    pub const ENROL: u16 = 0x0003;
    /// `ENROLLED`
    pub const ENROLLED: u16 = 0x0004;
    /// `HEARTBEAT`
    pub const HEARTBEAT: u16 = 0x0005;
    /// `HEARTBEAT_ACK`
    pub const HEARTBEAT_ACK: u16 = 0x0006;
    /// `DECIDE`
    pub const DECIDE: u16 = 0x0010;
    /// `DECISIONS`
    pub const DECISIONS: u16 = 0x0011;
    /// `ENTRIES`
    pub const ENTRIES: u16 = 0x0020;
    /// `ENTRIES_ACK`
    pub const ENTRIES_ACK: u16 = 0x0021;
    /// `REVOCATION`
    pub const REVOCATION: u16 = 0x0030;
    /// `OFFLINE_DELTA`
    pub const OFFLINE_DELTA: u16 = 0x0031;
    /// `RESYNC`
    pub const RESYNC: u16 = 0x0032;
    /// `PUSH_ACK`
    pub const PUSH_ACK: u16 = 0x0033;
    /// `DOORS`
    pub const DOORS: u16 = 0x0034;
    /// `DOOR_COMMAND`
    pub const DOOR_COMMAND: u16 = 0x0040;
    /// `DOOR_COMMAND_ACK`
    pub const DOOR_COMMAND_ACK: u16 = 0x0041;
    /// `INCIDENT`
    pub const INCIDENT: u16 = 0x0050;
    /// `PASSAGE` (version 2)
    pub const PASSAGE: u16 = 0x0022;
    /// `PASSAGE_ACK` (version 2)
    pub const PASSAGE_ACK: u16 = 0x0023;
    /// `INCIDENT_ACK`
    pub const INCIDENT_ACK: u16 = 0x0051;
    /// `PIN_CHECK`
    pub const PIN_CHECK: u16 = 0x0060;
    /// `PIN_RESULT`
    pub const PIN_RESULT: u16 = 0x0061;
    /// `FIRMWARE_AVAILABLE`
    pub const FIRMWARE_AVAILABLE: u16 = 0x0070;
    /// `FIRMWARE_INSTALLED`
    pub const FIRMWARE_INSTALLED: u16 = 0x0071;
    /// `ERROR`
    pub const ERROR: u16 = 0x00FF;
    /// `OFFLINE_LIST_GET`
    pub const OFFLINE_LIST_GET: u16 = 0x0100;
    /// `OFFLINE_LIST_BEGIN`
    pub const OFFLINE_LIST_BEGIN: u16 = 0x0101;
    /// `OFFLINE_LIST_CHUNK`
    pub const OFFLINE_LIST_CHUNK: u16 = 0x0102;
    /// `OFFLINE_LIST_END`
    pub const OFFLINE_LIST_END: u16 = 0x0103;
    /// `OFFLINE_LIST_ACK`
    pub const OFFLINE_LIST_ACK: u16 = 0x0104;
    /// `FIRMWARE_GET`
    pub const FIRMWARE_GET: u16 = 0x0110;
    /// `FIRMWARE_CHUNK`
    pub const FIRMWARE_CHUNK: u16 = 0x0111;
}

/// Declares a `u8` enumeration of the wire with an `Other(u8)` for values a newer peer
/// may send, so that decoding never fails on them and encoding gives them back.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this version does not know.
            Other(u8),
        }

        impl $name {
            /// The wire value.
            #[must_use]
            pub const fn to_u8(self) -> u8 {
                match self {
                    $($name::$variant => $value,)+
                    $name::Other(v) => v,
                }
            }

            /// From the wire value.
            #[must_use]
            pub const fn from_u8(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)+
                    other => $name::Other(other),
                }
            }
        }
    };
}

wire_enum!(
    /// A door command (PROTOCOL.md `DOOR_COMMAND`).
    DoorCommandKind {
        /// Open the door once.
        RemoteOpen = 1,
        /// Office mode on.
        OfficeModeOn = 2,
        /// Office mode off.
        OfficeModeOff = 3,
        /// Lockdown on.
        LockdownOn = 4,
        /// Lockdown off.
        LockdownOff = 5,
    }
);

wire_enum!(
    /// The outcome of a door command (PROTOCOL.md `DOOR_COMMAND_ACK`).
    CommandStatus {
        /// Done.
        Done = 0,
        /// The lock did not answer.
        Failed = 1,
        /// The IQ does not support it.
        Unsupported = 2,
        /// The IQ does not know the door.
        UnknownDoor = 3,
    }
);

wire_enum!(
    /// What an incident is about (PROTOCOL.md `INCIDENT`).
    IncidentKind {
        /// Door forced open.
        DoorForced = 1,
        /// Door held open.
        HeldOpen = 2,
        /// Tamper.
        Tamper = 3,
        /// Low battery.
        LowBattery = 4,
        /// Anything else.
        Unspecified = 255,
    }
);

wire_enum!(
    /// The answer to a PIN check (PROTOCOL.md `PIN_RESULT`).
    PinVerdict {
        /// Correct.
        Correct = 0,
        /// Wrong.
        Wrong = 1,
        /// No activation for this person on this IQ.
        NotActivated = 2,
        /// Locked after too many wrong tries.
        Locked = 3,
    }
);

wire_enum!(
    /// What a revocation item names (PROTOCOL.md `REVOCATION`).
    RevocationWhat {
        /// A credential.
        Credential = 1,
        /// A person and all their credentials.
        Person = 2,
        /// A person at one door.
        PersonAtDoor = 3,
        /// Everything until the next full list.
        Everything = 4,
    }
);

/// The wire value of a credential kind: 1 tag, 2 digital key, 3 PIN, 0 unknown.
#[must_use]
pub const fn kind_to_u8(kind: Option<CredentialKind>) -> u8 {
    match kind {
        Some(CredentialKind::Tag) => 1,
        Some(CredentialKind::DigitalKey) => 2,
        Some(CredentialKind::Pin) => 3,
        None => 0,
    }
}

/// A reader's direction on the wire: 0 unknown, 1 entry, 2 exit.
#[must_use]
pub const fn direction_to_u8(direction: Direction) -> u8 {
    match direction {
        Direction::Unknown => 0,
        Direction::Entry => 1,
        Direction::Exit => 2,
    }
}

/// A direction from its wire value; anything unknown is `Unknown`.
#[must_use]
pub const fn direction_from_u8(v: u8) -> Direction {
    match v {
        1 => Direction::Entry,
        2 => Direction::Exit,
        _ => Direction::Unknown,
    }
}

/// A credential kind from its wire value; anything unknown is `None`.
#[must_use]
pub const fn kind_from_u8(v: u8) -> Option<CredentialKind> {
    match v {
        1 => Some(CredentialKind::Tag),
        2 => Some(CredentialKind::DigitalKey),
        3 => Some(CredentialKind::Pin),
        _ => None,
    }
}

const fn effect_to_u8(effect: Effect) -> u8 {
    match effect {
        Effect::Allow => 1,
        Effect::Deny => 2,
    }
}

const fn effect_from_u8(v: u8) -> Effect {
    // Unknown values are a deny (PROTOCOL.md, DECISIONS).
    if v == 1 { Effect::Allow } else { Effect::Deny }
}

/// `HELLO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version spoken.
    pub min_version: u16,
    /// Highest version spoken.
    pub max_version: u16,
    /// Firmware version.
    pub firmware: String,
    /// Revision of the offline list held, 0 for none.
    pub offline_revision: u64,
}

/// `WELCOME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// Negotiated version.
    pub version: u16,
    /// The IQ's site.
    pub site: u32,
    /// The IQ's id.
    pub iq: u32,
    /// The node's current revision.
    pub revision: u64,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: u32,
    /// Largest frame length on this port.
    pub max_frame: u32,
    /// Whether a full offline list must be fetched.
    pub resync: bool,
    /// The IQ's doors.
    pub doors: Vec<u32>,
}

/// `ENROL`. Its `Debug` hides the code.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrol {
    /// The one-time code.
    pub code: String,
    /// PKCS#10 CSR, DER.
    pub csr: Vec<u8>,
}

impl std::fmt::Debug for Enrol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrol")
            .field("code", &"<redacted>")
            .field("csr_len", &self.csr.len())
            .finish()
    }
}

/// `ENROLLED`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    pub site: u32,
    /// IQ id.
    pub iq: u32,
    /// Client certificate, DER.
    pub certificate: Vec<u8>,
    /// Site CA certificate, DER.
    pub site_ca: Vec<u8>,
    /// Expiry, ms since the epoch.
    pub not_after: i64,
}

/// `HEARTBEAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// The IQ's clock, ms.
    pub iq_time: i64,
    /// Revision of the offline list held.
    pub offline_revision: u64,
}

/// `HEARTBEAT_ACK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The node's clock, ms.
    pub server_time: i64,
    /// The node's revision.
    pub revision: u64,
}

/// One request of `DECIDE`. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DecideItem {
    pub door: u32,
    /// Credential kind, `None` when unknown.
    pub kind: Option<CredentialKind>,
    /// What was read.
    pub secret: Vec<u8>,
    /// When, ms.
    pub at: i64,
    /// Which way the reader faces (version 2; `Unknown` from a version 1 IQ).
    pub direction: Direction,
}

impl std::fmt::Debug for DecideItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideItem")
            .field("door", &self.door)
            .field("kind", &self.kind)
            .field("secret_len", &self.secret.len())
            .field("at", &self.at)
            .field("direction", &self.direction)
            .finish()
    }
}

/// `PASSAGE` (version 2): what actually happened at a door after a credential was read,
/// so door rules count passages, not decisions. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Passage {
    /// The IQ's passage number: a passage sent again (its ack was lost) has the same one.
    pub id: u64,
    pub door: u32,
    /// Credential kind read, `None` when unknown.
    pub kind: Option<CredentialKind>,
    /// What was read.
    pub secret: Vec<u8>,
    /// When, ms.
    pub at: i64,
    /// Which way the reader faces.
    pub direction: Direction,
    /// Whether the door actually opened (the door contact saw it open).
    pub opened: bool,
}

impl std::fmt::Debug for Passage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passage")
            .field("id", &self.id)
            .field("door", &self.door)
            .field("kind", &self.kind)
            .field("secret_len", &self.secret.len())
            .field("at", &self.at)
            .field("direction", &self.direction)
            .field("opened", &self.opened)
            .finish()
    }
}

/// One answer of `DECISIONS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionItem {
    /// Open or not.
    pub effect: Effect,
    /// Reason code.
    pub reason: String,
}

/// `DECISIONS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decisions {
    /// The revision of every answer.
    pub revision: u64,
    /// One per request.
    pub items: Vec<DecisionItem>,
}

/// One entry of `ENTRIES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryItem {
    /// The IQ's entry sequence number.
    pub seq: u64,
    pub door: u32,
    /// When, ms.
    pub at: i64,
    /// Open or not.
    pub effect: Effect,
    /// The reason code of the IQ's decision.
    pub reason: String,
    /// Credential kind read.
    pub kind: Option<CredentialKind>,
    /// The credential from the offline list, if it matched one.
    pub credential: Option<u32>,
}

/// One item of `REVOCATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevocationItem {
    /// What is revoked.
    pub what: RevocationWhat,
    /// Credential or person id.
    pub id: u32,
    /// The door, for a person at a door.
    pub door: Option<u32>,
}

/// `REVOCATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revision of the change.
    pub revision: u64,
    /// What is revoked.
    pub items: Vec<RevocationItem>,
}

/// A grant of an offline entry: a door, limited by a schedule or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflineGrant {
    pub door: u32,
    /// Schedule, `None` for any time.
    pub schedule: Option<u32>,
}

/// An entry of an offline list. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct OfflineEntry {
    /// Credential id.
    pub credential: u32,
    pub kind: CredentialKind,
    /// What the reader sees.
    pub secret: Vec<u8>,
    /// Owner.
    pub person: Option<u32>,
    /// Offline access switched on.
    pub offline_access: bool,
    /// Valid from (inclusive), ms.
    pub valid_from: Option<i64>,
    /// Valid until (exclusive), ms.
    pub valid_until: Option<i64>,
    /// The IQ's doors it opens.
    pub grants: Vec<OfflineGrant>,
}

impl std::fmt::Debug for OfflineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineEntry")
            .field("credential", &self.credential)
            .field("kind", &self.kind)
            .field("person", &self.person)
            .field("offline_access", &self.offline_access)
            .field("valid_from", &self.valid_from)
            .field("valid_until", &self.valid_until)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// A period of an offline schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfflinePeriod {
    /// Bit 0 Monday .. bit 6 Sunday, bit 7 holiday.
    pub days: u8,
    /// Opening minute.
    pub start: u16,
    /// Closing minute.
    pub end: u16,
}

/// A schedule of an offline list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineSchedule {
    pub id: u32,
    pub periods: Vec<OfflinePeriod>,
    /// First day (yyyymmdd), inclusive.
    pub from: Option<u32>,
    /// Last day (yyyymmdd), inclusive.
    pub until: Option<u32>,
}

/// `OFFLINE_DELTA`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineDelta {
    pub from_revision: u64,
    pub to_revision: u64,
    /// Entries added or replaced.
    pub upserts: Vec<OfflineEntry>,
    /// Credential ids dropped.
    pub removals: Vec<u32>,
}

/// `DOOR_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorCommand {
    /// The node's id of the command.
    pub command_id: u64,
    pub door: u32,
    /// What to do.
    pub command: DoorCommandKind,
    /// Seconds to stay open, for a remote open.
    pub duration_s: u32,
}

/// `DOOR_COMMAND_ACK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorCommandAck {
    /// The command.
    pub command_id: u64,
    /// Its outcome.
    pub status: CommandStatus,
}

/// `INCIDENT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// The IQ's incident number.
    pub id: u64,
    /// What.
    pub kind: IncidentKind,
    /// Door, if any.
    pub door: Option<u32>,
    /// When, ms.
    pub at: i64,
    /// Free text.
    pub detail: String,
}

/// `PIN_CHECK`. Its `Debug` hides the PIN.
#[derive(Clone, PartialEq, Eq)]
pub struct PinCheck {
    pub person: u32,
    /// Digits typed.
    pub pin: Vec<u8>,
}

impl std::fmt::Debug for PinCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinCheck")
            .field("person", &self.person)
            .finish_non_exhaustive()
    }
}

/// `FIRMWARE_AVAILABLE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareAvailable {
    pub version: String,
    pub size: u64,
    /// Digest.
    pub sha256: [u8; 32],
    /// The IQ's token for downloading the file over HTTP (appended in version 2; absent
    /// when the node issued none).
    pub download_token: Option<String>,
}

/// `OFFLINE_LIST_BEGIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineListBegin {
    pub revision: u64,
    /// Tag entries.
    pub tags: u32,
    /// Digital key and PIN entries.
    pub remote_users: u32,
    /// Chunk frames following.
    pub chunks: u32,
    /// The site's IANA time zone.
    pub time_zone: String,
    pub schedules: Vec<OfflineSchedule>,
    /// Holidays, yyyymmdd.
    pub holidays: Vec<u32>,
}

/// `OFFLINE_LIST_CHUNK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineListChunk {
    /// Index from 0.
    pub index: u32,
    pub entries: Vec<OfflineEntry>,
}

/// `FIRMWARE_GET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareGet {
    pub version: String,
    /// First byte wanted.
    pub offset: u64,
    /// Most bytes wanted.
    pub max_len: u32,
}

/// `FIRMWARE_CHUNK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirmwareChunk {
    pub version: String,
    /// Whole size.
    pub size: u64,
    /// Whole digest.
    pub sha256: [u8; 32],
    /// Offset of `data`.
    pub offset: u64,
    /// Bytes.
    pub data: Vec<u8>,
}

/// `ERROR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    /// Whether the sender closes the connection after it.
    pub fatal: bool,
    /// Human-readable, no secrets.
    pub message: String,
}

/// The error codes of PROTOCOL.md section 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1
    Malformed,
    /// 2
    FrameTooLarge,
    /// 3
    UnsupportedVersion,
    /// 4
    UnknownMessageType,
    /// 5
    UnexpectedMessage,
    /// 6
    OutOfSequence,
    /// 7
    Forbidden,
    /// 8
    Unauthenticated,
    /// 9
    EnrolmentRefused,
    /// 10
    TooManySessions,
    /// 11
    LimitExceeded,
    /// 12
    Unavailable,
    /// 13
    Timeout,
    /// 14
    ShuttingDown,
    /// 15
    Revoked,
    /// 16
    NotFound,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// The wire value.
    #[must_use]
    pub const fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::UnsupportedVersion => 3,
            ErrorCode::UnknownMessageType => 4,
            ErrorCode::UnexpectedMessage => 5,
            ErrorCode::OutOfSequence => 6,
            ErrorCode::Forbidden => 7,
            ErrorCode::Unauthenticated => 8,
            ErrorCode::EnrolmentRefused => 9,
            ErrorCode::TooManySessions => 10,
            ErrorCode::LimitExceeded => 11,
            ErrorCode::Unavailable => 12,
            ErrorCode::Timeout => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Revoked => 15,
            ErrorCode::NotFound => 16,
            ErrorCode::Other(v) => v,
        }
    }

    /// From the wire value.
    #[must_use]
    pub const fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::UnknownMessageType,
            5 => ErrorCode::UnexpectedMessage,
            6 => ErrorCode::OutOfSequence,
            7 => ErrorCode::Forbidden,
            8 => ErrorCode::Unauthenticated,
            9 => ErrorCode::EnrolmentRefused,
            10 => ErrorCode::TooManySessions,
            11 => ErrorCode::LimitExceeded,
            12 => ErrorCode::Unavailable,
            13 => ErrorCode::Timeout,
            14 => ErrorCode::ShuttingDown,
            15 => ErrorCode::Revoked,
            16 => ErrorCode::NotFound,
            other => ErrorCode::Other(other),
        }
    }

    /// The snake_case name of PROTOCOL.md.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownMessageType => "unknown_message_type",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::OutOfSequence => "out_of_sequence",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::EnrolmentRefused => "enrolment_refused",
            ErrorCode::TooManySessions => "too_many_sessions",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Revoked => "revoked",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Other(_) => "other",
        }
    }
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// `HELLO`
    Hello(Hello),
    /// `WELCOME`
    Welcome(Welcome),
    /// `ENROL`
    Enrol(Enrol),
    /// `ENROLLED`
    Enrolled(Enrolled),
    /// `HEARTBEAT`
    Heartbeat(Heartbeat),
    /// `HEARTBEAT_ACK`
    HeartbeatAck(HeartbeatAck),
    /// `DECIDE`
    Decide(Vec<DecideItem>),
    /// `DECISIONS`
    Decisions(Decisions),
    /// `ENTRIES`
    Entries(Vec<EntryItem>),
    /// `ENTRIES_ACK`
    EntriesAck(Vec<u64>),
    /// `REVOCATION`
    Revocation(Revocation),
    /// `OFFLINE_DELTA`
    OfflineDelta(OfflineDelta),
    /// `RESYNC`, with the node's revision.
    Resync(u64),
    /// `PUSH_ACK`, with the push's revision.
    PushAck(u64),
    /// `DOORS`
    Doors(Vec<u32>),
    /// `DOOR_COMMAND`
    DoorCommand(DoorCommand),
    /// `DOOR_COMMAND_ACK`
    DoorCommandAck(DoorCommandAck),
    /// `INCIDENT`
    Incident(Incident),
    /// `PASSAGE`
    Passage(Passage),
    /// `PASSAGE_ACK`, with the passage's number.
    PassageAck(u64),
    /// `INCIDENT_ACK`, with the incident's number.
    IncidentAck(u64),
    /// `PIN_CHECK`
    PinCheck(PinCheck),
    /// `PIN_RESULT`
    PinResult(PinVerdict),
    /// `FIRMWARE_AVAILABLE`
    FirmwareAvailable(FirmwareAvailable),
    /// `FIRMWARE_INSTALLED`, with the version.
    FirmwareInstalled(String),
    /// `ERROR`
    Error(ErrorFrame),
    /// `OFFLINE_LIST_GET`
    OfflineListGet,
    /// `OFFLINE_LIST_BEGIN`
    OfflineListBegin(OfflineListBegin),
    /// `OFFLINE_LIST_CHUNK`
    OfflineListChunk(OfflineListChunk),
    /// `OFFLINE_LIST_END`, with the digest of the chunks' bodies.
    OfflineListEnd([u8; 32]),
    /// `OFFLINE_LIST_ACK`, with the revision now in force.
    OfflineListAck(u64),
    /// `FIRMWARE_GET`
    FirmwareGet(FirmwareGet),
    /// `FIRMWARE_CHUNK`
    FirmwareChunk(FirmwareChunk),
}

/// Why a frame's body is not a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MessageError {
    /// A type this version does not know.
    #[error("unknown message type {0:#06x}")]
    UnknownType(u16),
    /// The body does not decode.
    #[error("malformed body: {0}")]
    Decode(#[from] DecodeError),
}

impl MessageError {
    /// Whether this is a well-formed request over a count limit (`limit_exceeded`, not
    /// `malformed`).
    #[must_use]
    pub fn is_count_limit(&self) -> bool {
        matches!(
            self,
            MessageError::Decode(DecodeError::TooLong {
                field: "decide.items" | "entries.items",
                ..
            })
        )
    }
}

/// Which port a message belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 40000.
    Control,
    /// 40001.
    Bulk,
    /// Both (HELLO, WELCOME, ERROR).
    Both,
}

fn entry_rec(w: &mut Writer<'_>, e: &OfflineEntry) -> Result<(), EncodeError> {
    w.rec("offline_entry", |w| {
        w.u32(e.credential);
        w.u8(kind_to_u8(Some(e.kind)));
        w.bytes8(&e.secret, MAX_SECRET, "offline_entry.secret")?;
        w.opt(e.person, |w, v| {
            w.u32(v);
            Ok(())
        })?;
        w.bool(e.offline_access);
        w.opt(e.valid_from, |w, v| {
            w.i64(v);
            Ok(())
        })?;
        w.opt(e.valid_until, |w, v| {
            w.i64(v);
            Ok(())
        })?;
        w.list(&e.grants, MAX_GRANTS, "offline_entry.grants", |w, g| {
            w.rec("grant", |w| {
                w.u32(g.door);
                w.opt(g.schedule, |w, v| {
                    w.u32(v);
                    Ok(())
                })
            })
        })
    })
}

fn read_entry(r: &mut Reader<'_>) -> Result<OfflineEntry, DecodeError> {
    r.rec("offline_entry", |r| {
        let credential = r.u32("offline_entry.credential")?;
        let kind = kind_from_u8(r.u8("offline_entry.kind")?).ok_or(DecodeError::Invalid("offline_entry.kind"))?;
        let secret = r.bytes8(MAX_SECRET, "offline_entry.secret")?.to_vec();
        let person = r.opt("offline_entry.person", |r| r.u32("offline_entry.person"))?;
        let offline_access = r.bool("offline_entry.offline_access")?;
        let valid_from = r.opt("offline_entry.valid_from", |r| r.i64("offline_entry.valid_from"))?;
        let valid_until = r.opt("offline_entry.valid_until", |r| r.i64("offline_entry.valid_until"))?;
        let grants = r.list(MAX_GRANTS, "offline_entry.grants", |r| {
            r.rec("grant", |r| {
                Ok(OfflineGrant {
                    door: r.u32("grant.door")?,
                    schedule: r.opt("grant.schedule", |r| r.u32("grant.schedule"))?,
                })
            })
        })?;
        Ok(OfflineEntry {
            credential,
            kind,
            secret,
            person,
            offline_access,
            valid_from,
            valid_until,
            grants,
        })
    })
}

fn u32_item(w: &mut Writer<'_>, v: &u32) -> Result<(), EncodeError> {
    w.u32(*v);
    Ok(())
}

impl Message {
    /// The message's type number.
    #[must_use]
    pub const fn msg_type(&self) -> u16 {
        use types as t;
        match self {
            Message::Hello(_) => t::HELLO,
            Message::Welcome(_) => t::WELCOME,
            Message::Enrol(_) => t::ENROL,
            Message::Enrolled(_) => t::ENROLLED,
            Message::Heartbeat(_) => t::HEARTBEAT,
            Message::HeartbeatAck(_) => t::HEARTBEAT_ACK,
            Message::Decide(_) => t::DECIDE,
            Message::Decisions(_) => t::DECISIONS,
            Message::Entries(_) => t::ENTRIES,
            Message::EntriesAck(_) => t::ENTRIES_ACK,
            Message::Revocation(_) => t::REVOCATION,
            Message::OfflineDelta(_) => t::OFFLINE_DELTA,
            Message::Resync(_) => t::RESYNC,
            Message::PushAck(_) => t::PUSH_ACK,
            Message::Doors(_) => t::DOORS,
            Message::DoorCommand(_) => t::DOOR_COMMAND,
            Message::DoorCommandAck(_) => t::DOOR_COMMAND_ACK,
            Message::Incident(_) => t::INCIDENT,
            Message::Passage(_) => t::PASSAGE,
            Message::PassageAck(_) => t::PASSAGE_ACK,
            Message::IncidentAck(_) => t::INCIDENT_ACK,
            Message::PinCheck(_) => t::PIN_CHECK,
            Message::PinResult(_) => t::PIN_RESULT,
            Message::FirmwareAvailable(_) => t::FIRMWARE_AVAILABLE,
            Message::FirmwareInstalled(_) => t::FIRMWARE_INSTALLED,
            Message::Error(_) => t::ERROR,
            Message::OfflineListGet => t::OFFLINE_LIST_GET,
            Message::OfflineListBegin(_) => t::OFFLINE_LIST_BEGIN,
            Message::OfflineListChunk(_) => t::OFFLINE_LIST_CHUNK,
            Message::OfflineListEnd(_) => t::OFFLINE_LIST_END,
            Message::OfflineListAck(_) => t::OFFLINE_LIST_ACK,
            Message::FirmwareGet(_) => t::FIRMWARE_GET,
            Message::FirmwareChunk(_) => t::FIRMWARE_CHUNK,
        }
    }

    /// The port the message travels on.
    #[must_use]
    pub const fn port(&self) -> Port {
        match self.msg_type() {
            types::HELLO | types::WELCOME | types::ERROR => Port::Both,
            t if t >= 0x0100 => Port::Bulk,
            _ => Port::Control,
        }
    }

    /// The message's name in PROTOCOL.md.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "HELLO",
            Message::Welcome(_) => "WELCOME",
            Message::Enrol(_) => "ENROL",
            Message::Enrolled(_) => "ENROLLED",
            Message::Heartbeat(_) => "HEARTBEAT",
            Message::HeartbeatAck(_) => "HEARTBEAT_ACK",
            Message::Decide(_) => "DECIDE",
            Message::Decisions(_) => "DECISIONS",
            Message::Entries(_) => "ENTRIES",
            Message::EntriesAck(_) => "ENTRIES_ACK",
            Message::Revocation(_) => "REVOCATION",
            Message::OfflineDelta(_) => "OFFLINE_DELTA",
            Message::Resync(_) => "RESYNC",
            Message::PushAck(_) => "PUSH_ACK",
            Message::Doors(_) => "DOORS",
            Message::DoorCommand(_) => "DOOR_COMMAND",
            Message::DoorCommandAck(_) => "DOOR_COMMAND_ACK",
            Message::Incident(_) => "INCIDENT",
            Message::Passage(_) => "PASSAGE",
            Message::PassageAck(_) => "PASSAGE_ACK",
            Message::IncidentAck(_) => "INCIDENT_ACK",
            Message::PinCheck(_) => "PIN_CHECK",
            Message::PinResult(_) => "PIN_RESULT",
            Message::FirmwareAvailable(_) => "FIRMWARE_AVAILABLE",
            Message::FirmwareInstalled(_) => "FIRMWARE_INSTALLED",
            Message::Error(_) => "ERROR",
            Message::OfflineListGet => "OFFLINE_LIST_GET",
            Message::OfflineListBegin(_) => "OFFLINE_LIST_BEGIN",
            Message::OfflineListChunk(_) => "OFFLINE_LIST_CHUNK",
            Message::OfflineListEnd(_) => "OFFLINE_LIST_END",
            Message::OfflineListAck(_) => "OFFLINE_LIST_ACK",
            Message::FirmwareGet(_) => "FIRMWARE_GET",
            Message::FirmwareChunk(_) => "FIRMWARE_CHUNK",
        }
    }

    /// Appends the message's body to `buf`.
    pub fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let w = &mut Writer::new(buf);
        match self {
            Message::Hello(m) => {
                w.u16(m.min_version);
                w.u16(m.max_version);
                w.str(&m.firmware, MAX_SHORT, "hello.firmware")?;
                w.u64(m.offline_revision);
            }
            Message::Welcome(m) => {
                w.u16(m.version);
                w.u32(m.site);
                w.u32(m.iq);
                w.u64(m.revision);
                w.u32(m.heartbeat_ms);
                w.u32(m.max_frame);
                w.bool(m.resync);
                w.list(&m.doors, MAX_DOORS, "welcome.doors", u32_item)?;
            }
            Message::Enrol(m) => {
                w.str(&m.code, MAX_SHORT, "enrol.code")?;
                w.bytes16(&m.csr, MAX_DER, "enrol.csr")?;
            }
            Message::Enrolled(m) => {
                w.u32(m.site);
                w.u32(m.iq);
                w.bytes16(&m.certificate, MAX_DER, "enrolled.certificate")?;
                w.bytes16(&m.site_ca, MAX_DER, "enrolled.site_ca")?;
                w.i64(m.not_after);
            }
            Message::Heartbeat(m) => {
                w.i64(m.iq_time);
                w.u64(m.offline_revision);
            }
            Message::HeartbeatAck(m) => {
                w.i64(m.server_time);
                w.u64(m.revision);
            }
            Message::Decide(items) => {
                w.list(items, MAX_DECIDE_ITEMS, "decide.items", |w, i| {
                    w.rec("decide.item", |w| {
                        w.u32(i.door);
                        w.u8(kind_to_u8(i.kind));
                        w.bytes8(&i.secret, MAX_SECRET, "decide.secret")?;
                        w.i64(i.at);
                        // Omitted when unknown: the item is then exactly version 1's.
                        if i.direction != Direction::Unknown {
                            w.u8(direction_to_u8(i.direction));
                        }
                        Ok(())
                    })
                })?;
            }
            Message::Decisions(m) => {
                w.u64(m.revision);
                w.list(&m.items, MAX_DECIDE_ITEMS, "decisions.items", |w, i| {
                    w.rec("decisions.item", |w| {
                        w.u8(effect_to_u8(i.effect));
                        w.str(&i.reason, MAX_REASON, "decisions.reason")
                    })
                })?;
            }
            Message::Entries(items) => {
                w.list(items, MAX_ENTRY_ITEMS, "entries.items", |w, e| {
                    w.rec("entries.item", |w| {
                        w.u64(e.seq);
                        w.u32(e.door);
                        w.i64(e.at);
                        w.u8(effect_to_u8(e.effect));
                        w.str(&e.reason, MAX_REASON, "entries.reason")?;
                        w.u8(kind_to_u8(e.kind));
                        w.opt(e.credential, |w, v| {
                            w.u32(v);
                            Ok(())
                        })
                    })
                })?;
            }
            Message::EntriesAck(seqs) => {
                w.list(seqs, MAX_ENTRY_ITEMS, "entries_ack.seqs", |w, s| {
                    w.u64(*s);
                    Ok(())
                })?;
            }
            Message::Revocation(m) => {
                w.u64(m.revision);
                w.list(&m.items, MAX_REVOCATION_ITEMS, "revocation.items", |w, i| {
                    w.rec("revocation.item", |w| {
                        w.u8(i.what.to_u8());
                        w.u32(i.id);
                        w.opt(i.door, |w, v| {
                            w.u32(v);
                            Ok(())
                        })
                    })
                })?;
            }
            Message::OfflineDelta(m) => {
                w.u64(m.from_revision);
                w.u64(m.to_revision);
                w.list(&m.upserts, MAX_CHUNK_ENTRIES, "offline_delta.upserts", entry_rec)?;
                w.list(&m.removals, MAX_CHUNK_ENTRIES, "offline_delta.removals", u32_item)?;
            }
            Message::Resync(rev) | Message::PushAck(rev) | Message::OfflineListAck(rev) => w.u64(*rev),
            Message::Doors(doors) => w.list(doors, MAX_DOORS, "doors.doors", u32_item)?,
            Message::DoorCommand(m) => {
                w.u64(m.command_id);
                w.u32(m.door);
                w.u8(m.command.to_u8());
                w.u32(m.duration_s);
            }
            Message::DoorCommandAck(m) => {
                w.u64(m.command_id);
                w.u8(m.status.to_u8());
            }
            Message::Incident(m) => {
                w.u64(m.id);
                w.u8(m.kind.to_u8());
                w.opt(m.door, |w, v| {
                    w.u32(v);
                    Ok(())
                })?;
                w.i64(m.at);
                w.str(&m.detail, MAX_TEXT, "incident.detail")?;
            }
            Message::IncidentAck(id) => w.u64(*id),
            Message::Passage(m) => {
                w.u64(m.id);
                w.u32(m.door);
                w.u8(kind_to_u8(m.kind));
                w.bytes8(&m.secret, MAX_SECRET, "passage.secret")?;
                w.i64(m.at);
                w.u8(direction_to_u8(m.direction));
                w.bool(m.opened);
            }
            Message::PassageAck(id) => w.u64(*id),
            Message::PinCheck(m) => {
                w.u32(m.person);
                w.bytes8(&m.pin, MAX_PIN, "pin_check.pin")?;
            }
            Message::PinResult(v) => w.u8(v.to_u8()),
            Message::FirmwareAvailable(m) => {
                w.str(&m.version, MAX_SHORT, "firmware_available.version")?;
                w.u64(m.size);
                w.sha256(&m.sha256);
                // Last, so IQs that predate it read the fields before it and stop; empty
                // when there is none.
                w.str(
                    m.download_token.as_deref().unwrap_or_default(),
                    MAX_DOWNLOAD_TOKEN,
                    "firmware_available.download_token",
                )?;
            }
            Message::FirmwareInstalled(v) => w.str(v, MAX_SHORT, "firmware_installed.version")?,
            Message::Error(m) => {
                w.u16(m.code.to_u16());
                w.bool(m.fatal);
                w.str(&m.message, MAX_TEXT, "error.message")?;
            }
            Message::OfflineListGet => {}
            Message::OfflineListBegin(m) => {
                w.u64(m.revision);
                w.u32(m.tags);
                w.u32(m.remote_users);
                w.u32(m.chunks);
                w.str(&m.time_zone, MAX_SHORT, "offline_list_begin.time_zone")?;
                w.list(&m.schedules, MAX_SCHEDULES, "offline_list_begin.schedules", |w, s| {
                    w.rec("schedule", |w| {
                        w.u32(s.id);
                        w.list(&s.periods, MAX_PERIODS, "schedule.periods", |w, p| {
                            w.rec("period", |w| {
                                w.u8(p.days);
                                w.u16(p.start);
                                w.u16(p.end);
                                Ok(())
                            })
                        })?;
                        w.opt(s.from, |w, v| {
                            w.u32(v);
                            Ok(())
                        })?;
                        w.opt(s.until, |w, v| {
                            w.u32(v);
                            Ok(())
                        })
                    })
                })?;
                w.list(&m.holidays, MAX_HOLIDAYS, "offline_list_begin.holidays", u32_item)?;
            }
            Message::OfflineListChunk(m) => {
                w.u32(m.index);
                w.list(&m.entries, MAX_CHUNK_ENTRIES, "offline_list_chunk.entries", entry_rec)?;
            }
            Message::OfflineListEnd(digest) => w.sha256(digest),
            Message::FirmwareGet(m) => {
                w.str(&m.version, MAX_SHORT, "firmware_get.version")?;
                w.u64(m.offset);
                w.u32(m.max_len);
            }
            Message::FirmwareChunk(m) => {
                w.str(&m.version, MAX_SHORT, "firmware_chunk.version")?;
                w.u64(m.size);
                w.sha256(&m.sha256);
                w.u64(m.offset);
                w.bytes32(&m.data, MAX_FIRMWARE_CHUNK, "firmware_chunk.data")?;
            }
        }
        Ok(())
    }

    /// Decodes the body of a frame of type `msg_type`. Bytes after the known fields are
    /// ignored (PROTOCOL.md 4.1).
    pub fn decode(msg_type: u16, body: &[u8]) -> Result<Message, MessageError> {
        use types as t;
        let r = &mut Reader::new(body);
        let msg = match msg_type {
            t::HELLO => Message::Hello(Hello {
                min_version: r.u16("hello.min_version")?,
                max_version: r.u16("hello.max_version")?,
                firmware: r.str(MAX_SHORT, "hello.firmware")?,
                offline_revision: r.u64("hello.offline_revision")?,
            }),
            t::WELCOME => Message::Welcome(Welcome {
                version: r.u16("welcome.version")?,
                site: r.u32("welcome.site")?,
                iq: r.u32("welcome.iq")?,
                revision: r.u64("welcome.revision")?,
                heartbeat_ms: r.u32("welcome.heartbeat_ms")?,
                max_frame: r.u32("welcome.max_frame")?,
                resync: r.bool("welcome.resync")?,
                doors: r.list(MAX_DOORS, "welcome.doors", |r| r.u32("welcome.door"))?,
            }),
            t::ENROL => Message::Enrol(Enrol {
                code: r.str(MAX_SHORT, "enrol.code")?,
                csr: r.bytes16(MAX_DER, "enrol.csr")?.to_vec(),
            }),
            t::ENROLLED => Message::Enrolled(Enrolled {
                site: r.u32("enrolled.site")?,
                iq: r.u32("enrolled.iq")?,
                certificate: r.bytes16(MAX_DER, "enrolled.certificate")?.to_vec(),
                site_ca: r.bytes16(MAX_DER, "enrolled.site_ca")?.to_vec(),
                not_after: r.i64("enrolled.not_after")?,
            }),
            t::HEARTBEAT => Message::Heartbeat(Heartbeat {
                iq_time: r.i64("heartbeat.iq_time")?,
                offline_revision: r.u64("heartbeat.offline_revision")?,
            }),
            t::HEARTBEAT_ACK => Message::HeartbeatAck(HeartbeatAck {
                server_time: r.i64("heartbeat_ack.server_time")?,
                revision: r.u64("heartbeat_ack.revision")?,
            }),
            t::DECIDE => Message::Decide(r.list(MAX_DECIDE_ITEMS, "decide.items", |r| {
                r.rec("decide.item", |r| {
                    Ok(DecideItem {
                        door: r.u32("decide.door")?,
                        kind: kind_from_u8(r.u8("decide.kind")?),
                        secret: r.bytes8(MAX_SECRET, "decide.secret")?.to_vec(),
                        at: r.i64("decide.at")?,
                        // Version 2; a version 1 item ends before it.
                        direction: if r.is_empty() {
                            Direction::Unknown
                        } else {
                            direction_from_u8(r.u8("decide.direction")?)
                        },
                    })
                })
            })?),
            t::DECISIONS => Message::Decisions(Decisions {
                revision: r.u64("decisions.revision")?,
                items: r.list(MAX_DECIDE_ITEMS, "decisions.items", |r| {
                    r.rec("decisions.item", |r| {
                        Ok(DecisionItem {
                            effect: effect_from_u8(r.u8("decisions.effect")?),
                            reason: r.str(MAX_REASON, "decisions.reason")?,
                        })
                    })
                })?,
            }),
            t::ENTRIES => Message::Entries(r.list(MAX_ENTRY_ITEMS, "entries.items", |r| {
                r.rec("entries.item", |r| {
                    Ok(EntryItem {
                        seq: r.u64("entries.seq")?,
                        door: r.u32("entries.door")?,
                        at: r.i64("entries.at")?,
                        effect: effect_from_u8(r.u8("entries.effect")?),
                        reason: r.str(MAX_REASON, "entries.reason")?,
                        kind: kind_from_u8(r.u8("entries.kind")?),
                        credential: r.opt("entries.credential", |r| r.u32("entries.credential"))?,
                    })
                })
            })?),
            t::ENTRIES_ACK => {
                Message::EntriesAck(r.list(MAX_ENTRY_ITEMS, "entries_ack.seqs", |r| r.u64("entries_ack.seq"))?)
            }
            t::REVOCATION => Message::Revocation(Revocation {
                revision: r.u64("revocation.revision")?,
                items: r.list(MAX_REVOCATION_ITEMS, "revocation.items", |r| {
                    r.rec("revocation.item", |r| {
                        Ok(RevocationItem {
                            what: RevocationWhat::from_u8(r.u8("revocation.what")?),
                            id: r.u32("revocation.id")?,
                            door: r.opt("revocation.door", |r| r.u32("revocation.door"))?,
                        })
                    })
                })?,
            }),
            t::OFFLINE_DELTA => Message::OfflineDelta(OfflineDelta {
                from_revision: r.u64("offline_delta.from_revision")?,
                to_revision: r.u64("offline_delta.to_revision")?,
                upserts: r.list(MAX_CHUNK_ENTRIES, "offline_delta.upserts", read_entry)?,
                removals: r.list(MAX_CHUNK_ENTRIES, "offline_delta.removals", |r| {
                    r.u32("offline_delta.removal")
                })?,
            }),
            t::RESYNC => Message::Resync(r.u64("resync.revision")?),
            t::PUSH_ACK => Message::PushAck(r.u64("push_ack.revision")?),
            t::DOORS => Message::Doors(r.list(MAX_DOORS, "doors.doors", |r| r.u32("doors.door"))?),
            t::DOOR_COMMAND => Message::DoorCommand(DoorCommand {
                command_id: r.u64("door_command.command_id")?,
                door: r.u32("door_command.door")?,
                command: DoorCommandKind::from_u8(r.u8("door_command.command")?),
                duration_s: r.u32("door_command.duration_s")?,
            }),
            t::DOOR_COMMAND_ACK => Message::DoorCommandAck(DoorCommandAck {
                command_id: r.u64("door_command_ack.command_id")?,
                status: CommandStatus::from_u8(r.u8("door_command_ack.status")?),
            }),
            t::INCIDENT => Message::Incident(Incident {
                id: r.u64("incident.id")?,
                kind: IncidentKind::from_u8(r.u8("incident.kind")?),
                door: r.opt("incident.door", |r| r.u32("incident.door"))?,
                at: r.i64("incident.at")?,
                detail: r.str(MAX_TEXT, "incident.detail")?,
            }),
            t::INCIDENT_ACK => Message::IncidentAck(r.u64("incident_ack.id")?),
            t::PASSAGE => Message::Passage(Passage {
                id: r.u64("passage.id")?,
                door: r.u32("passage.door")?,
                kind: kind_from_u8(r.u8("passage.kind")?),
                secret: r.bytes8(MAX_SECRET, "passage.secret")?.to_vec(),
                at: r.i64("passage.at")?,
                direction: direction_from_u8(r.u8("passage.direction")?),
                opened: r.bool("passage.opened")?,
            }),
            t::PASSAGE_ACK => Message::PassageAck(r.u64("passage_ack.id")?),
            t::PIN_CHECK => Message::PinCheck(PinCheck {
                person: r.u32("pin_check.person")?,
                pin: r.bytes8(MAX_PIN, "pin_check.pin")?.to_vec(),
            }),
            t::PIN_RESULT => Message::PinResult(PinVerdict::from_u8(r.u8("pin_result.result")?)),
            t::FIRMWARE_AVAILABLE => Message::FirmwareAvailable(FirmwareAvailable {
                version: r.str(MAX_SHORT, "firmware_available.version")?,
                size: r.u64("firmware_available.size")?,
                sha256: r.sha256("firmware_available.sha256")?,
                download_token: Some(r.str(MAX_DOWNLOAD_TOKEN, "firmware_available.download_token")?)
                    .filter(|t| !t.is_empty()),
            }),
            t::FIRMWARE_INSTALLED => Message::FirmwareInstalled(r.str(MAX_SHORT, "firmware_installed.version")?),
            t::ERROR => Message::Error(ErrorFrame {
                code: ErrorCode::from_u16(r.u16("error.code")?),
                fatal: r.bool("error.fatal")?,
                message: r.str(MAX_TEXT, "error.message")?,
            }),
            t::OFFLINE_LIST_GET => Message::OfflineListGet,
            t::OFFLINE_LIST_BEGIN => Message::OfflineListBegin(OfflineListBegin {
                revision: r.u64("offline_list_begin.revision")?,
                tags: r.u32("offline_list_begin.tags")?,
                remote_users: r.u32("offline_list_begin.remote_users")?,
                chunks: r.u32("offline_list_begin.chunks")?,
                time_zone: r.str(MAX_SHORT, "offline_list_begin.time_zone")?,
                schedules: r.list(MAX_SCHEDULES, "offline_list_begin.schedules", |r| {
                    r.rec("schedule", |r| {
                        Ok(OfflineSchedule {
                            id: r.u32("schedule.id")?,
                            periods: r.list(MAX_PERIODS, "schedule.periods", |r| {
                                r.rec("period", |r| {
                                    Ok(OfflinePeriod {
                                        days: r.u8("period.days")?,
                                        start: r.u16("period.start")?,
                                        end: r.u16("period.end")?,
                                    })
                                })
                            })?,
                            from: r.opt("schedule.from", |r| r.u32("schedule.from"))?,
                            until: r.opt("schedule.until", |r| r.u32("schedule.until"))?,
                        })
                    })
                })?,
                holidays: r.list(MAX_HOLIDAYS, "offline_list_begin.holidays", |r| {
                    r.u32("offline_list_begin.holiday")
                })?,
            }),
            t::OFFLINE_LIST_CHUNK => Message::OfflineListChunk(OfflineListChunk {
                index: r.u32("offline_list_chunk.index")?,
                entries: r.list(MAX_CHUNK_ENTRIES, "offline_list_chunk.entries", read_entry)?,
            }),
            t::OFFLINE_LIST_END => Message::OfflineListEnd(r.sha256("offline_list_end.sha256")?),
            t::OFFLINE_LIST_ACK => Message::OfflineListAck(r.u64("offline_list_ack.revision")?),
            t::FIRMWARE_GET => Message::FirmwareGet(FirmwareGet {
                version: r.str(MAX_SHORT, "firmware_get.version")?,
                offset: r.u64("firmware_get.offset")?,
                max_len: r.u32("firmware_get.max_len")?,
            }),
            t::FIRMWARE_CHUNK => Message::FirmwareChunk(FirmwareChunk {
                version: r.str(MAX_SHORT, "firmware_chunk.version")?,
                size: r.u64("firmware_chunk.size")?,
                sha256: r.sha256("firmware_chunk.sha256")?,
                offset: r.u64("firmware_chunk.offset")?,
                data: r.bytes32(MAX_FIRMWARE_CHUNK, "firmware_chunk.data")?.to_vec(),
            }),
            other => return Err(MessageError::UnknownType(other)),
        };
        Ok(msg)
    }
}
