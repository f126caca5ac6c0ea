//! Identifiers of the admin records the store keeps beside the decision model.
//!
//! The model's own ids (`SiteId`, `DoorId`, …) live in `keyway-core`; these are the
//! database's row ids of accounts, invitations, tokens and their kin, so a signature says
//! which record it takes and a voucher id cannot be passed where an account is meant.
//! Each displays as the `kind:id` that audit rows and error messages use.

use std::fmt;

macro_rules! record_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type, serde::Serialize, serde::Deserialize,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw row id.
            #[must_use]
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

record_id!(
    /// An account of the admin API.
    AccountId, "account:"
);
record_id!(
    /// An invitation to join a site.
    InvitationId, "invitation:"
);
record_id!(
    /// A voucher (a site's licence).
    VoucherId, "voucher:"
);
record_id!(
    /// An API token.
    TokenId, "api_token:"
);
record_id!(
    /// An uploaded firmware file.
    FirmwareId, "firmware:"
);
record_id!(
    /// An incident (a forced door, a tamper, …).
    IncidentId, "incident:"
);
record_id!(
    /// An account's notification setting on a site.
    SettingId, "notification_setting:"
);
record_id!(
    /// A queued event in the notifications outbox.
    OutboxId, "outbox:"
);
record_id!(
    /// A webhook endpoint.
    WebhookId, "webhook:"
);
record_id!(
    /// One delivery of an event to a webhook.
    DeliveryId, "delivery:"
);
record_id!(
    /// An uploaded plugin module.
    PluginId, "plugin:"
);
record_id!(
    /// A stored policy bundle.
    BundleId, "bundle:"
);
record_id!(
    /// A row of the entries log.
    EntryId, "entry:"
);
record_id!(
    /// A row of the audit log.
    AuditId, "audit:"
);
