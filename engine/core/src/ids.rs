//! Identifiers of the model's entities.
//!
//! Ids are integers handed out by the store, plain `u32` newtypes rather than strings or
//! UUIDs. They need not be dense: the snapshot's tables follow the live entities, not
//! the largest id, so any id up to [`crate::MAX_ID`] (every `u32` but `u32::MAX`) works.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw integer.
            #[must_use]
            pub const fn get(self) -> $inner {
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

id_type!(
    /// A site: one customer's set of doors, people and gateways.
    SiteId(u32), "site:"
);
id_type!(
    /// A door (a lock).
    DoorId(u32), "door:"
);
id_type!(
    /// An IQ gateway.
    IqId(u32), "iq:"
);
id_type!(
    /// A person on a site.
    PersonId(u32), "person:"
);
id_type!(
    /// A credential: a tag, a digital key or a PIN.
    CredentialId(u32), "credential:"
);
id_type!(
    /// An access group: people x doors x one schedule.
    GroupId(u32), "group:"
);
id_type!(
    /// A weekly time schedule.
    ScheduleId(u32), "schedule:"
);
id_type!(
    /// A holiday calendar.
    CalendarId(u32), "calendar:"
);
id_type!(
    /// A role, an index into the role table compiled from the roles plugin.
    RoleId(u16), "role:"
);

/// A revision of the whole state. Every mutation creates the next one, and every decision
/// reports the revision it was taken on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl Revision {
    /// The raw counter.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}
