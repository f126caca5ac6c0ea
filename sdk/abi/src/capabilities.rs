//! The capability names Keyway itself checks. A roles plugin may declare others; the
//! host gives each a bit of its own, up to 64 in all.

/// Invite people to the site.
pub const PEOPLE_INVITE: &str = "people.invite";
/// Block and unblock people.
pub const PEOPLE_BLOCK: &str = "people.block";
/// Grant and revoke rights (access groups) and roles.
pub const RIGHTS_GRANT: &str = "rights.grant";
/// Read every entry of the site.
pub const ENTRIES_READ_ALL: &str = "entries.read_all";
/// Read one's own entries.
pub const ENTRIES_READ_OWN: &str = "entries.read_own";
/// Transfer the site's ownership.
pub const SITE_TRANSFER_OWNERSHIP: &str = "site.transfer_ownership";
/// Reset a person's PIN for an IQ.
pub const IQ_RESET_PIN: &str = "iq.reset_pin";
/// Reset an IQ (every user then reactivates).
pub const IQ_RESET: &str = "iq.reset";
/// Open a door remotely.
pub const DOOR_REMOTE_OPEN: &str = "door.remote_open";
/// Put doors or the site in lockdown.
pub const DOOR_LOCKDOWN: &str = "door.lockdown";
/// Configure the site's notifications.
pub const NOTIFICATIONS_CONFIGURE: &str = "notifications.configure";

/// The well-known capabilities, in their bit order (bit 0 first).
pub const WELL_KNOWN: [&str; 11] = [
    PEOPLE_INVITE,
    PEOPLE_BLOCK,
    RIGHTS_GRANT,
    ENTRIES_READ_ALL,
    ENTRIES_READ_OWN,
    SITE_TRANSFER_OWNERSHIP,
    IQ_RESET_PIN,
    IQ_RESET,
    DOOR_REMOTE_OPEN,
    DOOR_LOCKDOWN,
    NOTIFICATIONS_CONFIGURE,
];
