//! The store's clock: where the few times the store stamps on its own come from.
//!
//! Every facet method that stamps or judges a time takes the caller's `now`. Three
//! times cannot come from a caller, because they must be read at the moment they
//! describe:
//! - a model write's change-log and audit stamp, read under the writers' lock, so that
//!   change-log times follow revision order whatever the callers' clocks said;
//! - the queue time of an event the entries writer raises while it commits a batch;
//! - the retention purger's "now", between two sleeps.
//!
//! Those are read from the [`Clock`] the store was opened with
//! ([`crate::StoreConfig::clock`]): the system clock, unless a test, a simulation or a
//! replay sets its own.

use jiff::Timestamp;
use std::sync::Arc;

/// A source of the current time.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    #[must_use]
    pub fn system() -> Clock {
        Clock(Arc::new(Timestamp::now))
    }

    /// A clock that answers whatever `read` answers: a fixed instant, a test's manual
    /// clock, a simulation's virtual time.
    #[must_use]
    pub fn new(read: impl Fn() -> Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(read))
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}
