//! The types that cross the boundary between the host and a plugin.
//!
//! Both sides encode them with postcard, so the field order of every struct and the
//! variant order of every enum is part of the ABI: append, never reorder. `sdk/ABI.md`
//! spells the encoding out for authors who do not write Rust.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What every hook answers: its output, or an error message the host reports verbatim.
pub type HookResult<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------
// roles

/// The role table a roles plugin declares. The host compiles it into bitmasks once, when
/// the bundle loads; no WASM runs on the request path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTableDef {
    /// The roles, in any order. Ids must be unique and below 64.
    pub roles: Vec<RoleDef>,
}

/// One role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDef {
    /// The role's id, as stored on people (`keyway_core::RoleId`).
    pub id: u16,
    /// A stable name, e.g. `site_admin`.
    pub name: String,
    /// Higher is more powerful. Door rules receive it (e.g. "admin or higher").
    pub rank: u8,
    /// Named capabilities, e.g. `people.invite`; see [`capabilities`](crate::capabilities).
    pub capabilities: Vec<String>,
    /// Roles a holder of this role may grant.
    pub may_grant: Vec<u16>,
    /// Roles a holder of this role may revoke.
    pub may_revoke: Vec<u16>,
    /// Roles to which a holder may transfer the site's ownership (needs
    /// `site.transfer_ownership`).
    pub transfer_ownership_to: Vec<u16>,
    /// Whether holders still pass doors under lockdown.
    pub lockdown_exempt: bool,
    /// How many people may hold the role on one site; `None` for no limit.
    pub max_holders: Option<u32>,
}

// ---------------------------------------------------------------------------------------
// voucher

/// A thing the voucher counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Counted {
    /// People (users) on the site.
    People,
    /// People who use the mobile app.
    AppUsers,
    /// Doors.
    Doors,
    /// IQ gateways.
    Iqs,
}

impl Counted {
    /// A lowercase noun for messages.
    #[must_use]
    pub const fn noun(self) -> &'static str {
        match self {
            Counted::People => "users",
            Counted::AppUsers => "app users",
            Counted::Doors => "doors",
            Counted::Iqs => "IQs",
        }
    }
}

/// The terms of a site's voucher (its tier and end), as a voucher plugin sees them. Not
/// the store's voucher record, which also has a code and a redemption.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoucherTerms {
    /// The tier, e.g. `basic`; the plugin's config says what each tier allows.
    pub tier: String,
    /// When the voucher ends, as Unix seconds; `None` for never.
    pub valid_until: Option<i64>,
}

/// Current counts on the site, before the change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub people: u32,
    pub app_users: u32,
    pub doors: u32,
    pub iqs: u32,
}

impl Counts {
    /// The count of one kind.
    #[must_use]
    pub const fn of(&self, what: Counted) -> u32 {
        match what {
            Counted::People => self.people,
            Counted::AppUsers => self.app_users,
            Counted::Doors => self.doors,
            Counted::Iqs => self.iqs,
        }
    }
}

/// The input of the voucher hook: called on every write that changes a counted thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoucherInput {
    /// The site's voucher.
    pub voucher: VoucherTerms,
    /// The counts before the change.
    pub counts: Counts,
    /// What changes.
    pub change: Counted,
    /// By how much (negative for removals).
    pub delta: i32,
    /// The time of the write, as Unix seconds.
    pub at_unix: i64,
    /// (v3) The voucher's own caps, when the instance's operator issued it with caps
    /// rather than a tier; they take precedence over any tier. Last, so that an older
    /// plugin, which stops decoding before it, still reads the rest.
    pub issued: Option<IssuedVoucher>,
}

/// A voucher issued with its own caps (ABI version 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedVoucher {
    /// The code printed on it, for messages.
    pub code: String,
    /// The most people the site may have.
    pub max_users: u32,
    /// The most app users the site may have.
    pub max_app_users: u32,
}

/// The voucher's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoucherVerdict {
    /// The write may go ahead.
    Allow,
    /// The write is refused; the API returns `message` verbatim.
    Deny {
        /// For the person who made the request.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------
// notify

/// A kind of event a site can be notified of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// Someone was let in.
    EntryGranted,
    /// Someone tried to open a door and was refused.
    EntryDenied,
    /// A door was forced open.
    DoorForced,
    /// A door was left open.
    DoorLeftOpen,
    /// A lock's battery is low.
    BatteryLow,
    /// An IQ stopped answering.
    IqOffline,
    /// An administrative change: people, rights, roles, doors.
    AdminChange,
    /// A lock or an IQ reported tampering (ABI version 3). The host never offers it to
    /// an older plugin, which could not decode it.
    Tamper,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 8] = [
        EventKind::EntryGranted,
        EventKind::EntryDenied,
        EventKind::DoorForced,
        EventKind::DoorLeftOpen,
        EventKind::BatteryLow,
        EventKind::IqOffline,
        EventKind::AdminChange,
        EventKind::Tamper,
    ];

    /// A stable dotted code, as used in settings and configs.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            EventKind::EntryGranted => "entry.granted",
            EventKind::EntryDenied => "entry.denied",
            EventKind::DoorForced => "incident.door_forced",
            EventKind::DoorLeftOpen => "incident.door_left_open",
            EventKind::BatteryLow => "incident.battery_low",
            EventKind::IqOffline => "incident.iq_offline",
            EventKind::AdminChange => "admin.change",
            EventKind::Tamper => "incident.tamper",
        }
    }

    /// The first ABI version that names this kind: a plugin of an older version is
    /// never sent it, neither as the event nor among the enabled kinds.
    #[must_use]
    pub const fn since_abi(self) -> i32 {
        match self {
            EventKind::Tamper => 3,
            _ => 1,
        }
    }

    /// The kind with this code.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        EventKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// One event on a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// When, as Unix seconds.
    pub at_unix: i64,
    /// The door, if any: id and name.
    pub door: Option<(u32, String)>,
    /// The person, if any: id and display name.
    pub person: Option<(u32, String)>,
    /// Free text from the source, e.g. the decision's reason.
    pub detail: String,
}

/// A delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// Email.
    Email,
    /// A push message to the app.
    Push,
    /// A text message.
    Sms,
}

/// Who receives a notification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub person: u32,
    /// The address on the channel: an email address, a device token, a phone number.
    pub address: String,
}

/// The site's notification settings, as configured on the notifications page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSettings {
    /// The site's name, for subjects.
    pub site_name: String,
    /// The site owner.
    pub owner: Recipient,
    /// The channel the owner chose.
    pub channel: Channel,
    /// The event kinds the site wants to hear about.
    pub enabled: Vec<EventKind>,
}

/// The input of the notify hook: one event, off the hot path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyInput {
    pub event: Event,
    /// The site's settings.
    pub settings: NotificationSettings,
}

/// A notification to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Who.
    pub recipient: Recipient,
    /// How.
    pub channel: Channel,
    /// A one-line subject.
    pub subject: String,
    pub body: String,
}

// ---------------------------------------------------------------------------------------
// door rule

/// Which way a reader faces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// The reader does not say.
    #[default]
    Unknown,
    /// An entry reader.
    Entry,
    /// An exit reader.
    Exit,
}

/// (v4) What was presented at the reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CredentialKind {
    /// An RFID tag.
    #[default]
    Tag,
    /// A digital key (a phone).
    DigitalKey,
    /// A PIN typed on a keypad.
    Pin,
}

/// The moment of a decision in the site's time zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTime {
    /// ISO weekday: 1 is Monday, 7 is Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0..1440.
    pub minute_of_day: u16,
}

/// What the core decided before the rule ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreVerdict<'a> {
    /// Whether the core would open the door.
    pub allow: bool,
    /// The core's reason code, e.g. `granted`, `no_right`. Borrowed from the input
    /// buffer when decoded, so a rule call allocates nothing for it.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
}

/// The input of a door rule: the decision context.
///
/// It borrows its strings and bytes from the buffer it was decoded from (the door-rule
/// path runs on every decision at the door; a heap allocation per field would cost more
/// than most rules do). On the wire a `Cow` is exactly a `String` / `Vec<u8>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoorRuleInput<'a> {
    pub door: u32,
    /// The person, when the credential is known and assigned.
    pub person: Option<u32>,
    /// The person's role.
    pub role: Option<u16>,
    /// The rank of that role in the bundle's role table.
    pub rank: Option<u8>,
    /// The credential, when known.
    pub credential: Option<u32>,
    /// The time, as Unix seconds.
    pub at_unix: i64,
    /// The same moment in the site's time zone.
    pub local: LocalTime,
    /// Which way the reader faces.
    pub direction: Direction,
    /// The core's verdict.
    #[serde(borrow)]
    pub verdict: CoreVerdict<'a>,
    /// The state the host keeps for this rule and this person; empty at first.
    #[serde(borrow)]
    pub state: Cow<'a, [u8]>,
    /// Whether the door's site is open at this moment by the opening hours the host
    /// holds for the site (its time zone, holidays, periods crossing midnight and DST
    /// already applied); `None` when the site has no opening hours set.
    pub site_open: Option<bool>,
    // ABI version 2 appends the fields below. A version 1 plugin stops decoding before
    // them (postcard ignores what follows a complete value), so it runs as before.
    /// (v2) The door's site.
    pub site: u32,
    /// (v2) The state the host keeps for this rule and this door; empty at first.
    #[serde(borrow)]
    pub door_state: Cow<'a, [u8]>,
    /// (v2) The state the host keeps for this rule and this site; empty at first.
    #[serde(borrow)]
    pub site_state: Cow<'a, [u8]>,
    // ABI version 4 appends the fields below; earlier plugins stop decoding before them.
    /// (v4) What was presented: a tag, a digital key or a PIN (known even when the
    /// credential is not).
    pub kind: CredentialKind,
    /// (v4) The person's access groups, by ascending id (all of them, not only those
    /// that open this door); empty when no person is known.
    pub groups: Cow<'a, [u32]>,
    /// (v4) The configuration this door's attachment of the rule was given (empty when
    /// none): the same rule can be attached to several doors with different settings.
    /// The rule's `door_config` hook checked it when it was attached.
    pub door_config: Cow<'a, Config>,
}

/// What a door rule says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleVerdict {
    /// Let the person through (a rule never turns the core's deny into an allow).
    Allow,
    /// Keep the door shut; `reason` ends up in the decision.
    Deny {
        /// Why, for the entry log.
        reason: String,
    },
    /// No opinion: the core's verdict stands.
    Abstain,
}

/// What to do with a state the host keeps (per person, door or site).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateUpdate {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Replace it.
    Set(Vec<u8>),
    /// Forget it.
    Clear,
}

/// The output of a door rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorRuleOutput {
    pub verdict: RuleVerdict,
    /// The new per-person state.
    pub state: StateUpdate,
    /// (v2) The new per-door state.
    pub door_state: StateUpdate,
    /// (v2) The new per-site state.
    pub site_state: StateUpdate,
    /// (v2) What the host must see done beside the answer (at most 4), e.g. notify the
    /// guard; carried with the decision to the notification path. An obligation never
    /// changes the verdict.
    pub obligations: Vec<Obligation>,
}

/// (v2) Something a door rule asks the host to see done beside its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligation {
    /// What, as a lowercase dotted name (`notify.guard`), at most 64 bytes.
    pub kind: String,
    /// Free text for whoever acts on it, at most 256 bytes (longer is cut).
    pub detail: String,
}

impl DoorRuleOutput {
    /// Abstain and leave the state alone.
    #[must_use]
    pub const fn abstain() -> Self {
        DoorRuleOutput {
            verdict: RuleVerdict::Abstain,
            state: StateUpdate::Keep,
            door_state: StateUpdate::Keep,
            site_state: StateUpdate::Keep,
            obligations: Vec::new(),
        }
    }

    /// Allow and leave the state alone.
    #[must_use]
    pub const fn allow() -> Self {
        DoorRuleOutput {
            verdict: RuleVerdict::Allow,
            state: StateUpdate::Keep,
            door_state: StateUpdate::Keep,
            site_state: StateUpdate::Keep,
            obligations: Vec::new(),
        }
    }

    /// Deny with a reason, and leave the state alone.
    #[must_use]
    pub fn deny(reason: impl Into<String>) -> Self {
        DoorRuleOutput {
            verdict: RuleVerdict::Deny { reason: reason.into() },
            state: StateUpdate::Keep,
            door_state: StateUpdate::Keep,
            site_state: StateUpdate::Keep,
            obligations: Vec::new(),
        }
    }

    /// The same verdict, with a new per-person state.
    #[must_use]
    pub fn with_state(mut self, state: StateUpdate) -> Self {
        self.state = state;
        self
    }

    /// (v2) The same verdict, with a new per-door state.
    #[must_use]
    pub fn with_door_state(mut self, state: StateUpdate) -> Self {
        self.door_state = state;
        self
    }

    /// (v2) The same verdict, with one more obligation.
    #[must_use]
    pub fn with_obligation(mut self, kind: impl Into<String>, detail: impl Into<String>) -> Self {
        self.obligations.push(Obligation {
            kind: kind.into(),
            detail: detail.into(),
        });
        self
    }

    /// (v2) The same verdict, with a new per-site state.
    #[must_use]
    pub fn with_site_state(mut self, state: StateUpdate) -> Self {
        self.site_state = state;
        self
    }
}

// ---------------------------------------------------------------------------------------
// passage (ABI version 2)

/// (v2) What actually happened at a door after a decision: the IQ reports the door
/// opened (or stayed shut). A door rule that exports `keyway_passage` hears of every
/// passage at the doors that attach it, so what it counts (occupancy, anti-passback) is
/// what happened, not what was decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassageInput<'a> {
    pub door: u32,
    /// The door's site.
    pub site: u32,
    /// The person, when known.
    pub person: Option<u32>,
    /// When, as Unix seconds.
    pub at_unix: i64,
    /// Which way the reader faces.
    pub direction: Direction,
    /// Whether the door actually opened.
    pub opened: bool,
    /// The state the host keeps for this rule and this person.
    #[serde(borrow)]
    pub state: Cow<'a, [u8]>,
    /// The state the host keeps for this rule and this door.
    #[serde(borrow)]
    pub door_state: Cow<'a, [u8]>,
    /// The state the host keeps for this rule and this site.
    #[serde(borrow)]
    pub site_state: Cow<'a, [u8]>,
    /// (v4) The configuration this door's attachment of the rule was given (empty when
    /// none), as in [`DoorRuleInput::door_config`]. Earlier plugins stop decoding before
    /// it.
    pub door_config: Cow<'a, Config>,
}

/// (v2) A rule's answer to a passage: how its states change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageOutput {
    /// The new per-person state.
    pub state: StateUpdate,
    /// The new per-door state.
    pub door_state: StateUpdate,
    /// The new per-site state.
    pub site_state: StateUpdate,
}
