//! fairqueue's dispatcher core.
//!
//! The modules are named after the concepts of the spec and know nothing of Python:
//! [`dispatcher`] (requests, slot accounting, leases and delays under a policy),
//! [`policy`] (`peek_set` and hierarchical `fair_share`), [`rate`] (rate limits), [`delay`], [`lease`], [`clock`], [`name`],
//! [`sim`] (the dispatcher on a virtual clock). The `embedded` feature adds the embedded
//! store's hot statements (`embedded`, on the system SQLite); the `python` feature adds
//! the thin PyO3 binding that is built into `fairqueue._core`.

pub mod clock;
pub mod delay;
pub mod dispatcher;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod lease;
pub mod limits;
pub mod name;
pub mod policy;
pub mod rate;
pub mod request;
pub mod sim;

#[cfg(feature = "python")]
mod python;

pub use clock::{Clock, Nanos, SystemClock, VirtualClock, NANOS_PER_SEC};
pub use dispatcher::{
    Abort, Counters, Dispatcher, Event, Grant, KeyStats, Location, NamedOptions, NamedRequest, NewRequest, OrgStats,
    Outcome, PairStats, RateScope, Release, RequestOptions, Stats,
};
pub use error::{CoreError, CoreResult};
pub use lease::LeaseId;
pub use limits::{
    Config, KeyLimits, OrgLimits, PairLimits, PolicyKind, RateLimit, Shares, DEFAULT_AGING, DEFAULT_PRIORITY, MAX_COST,
    MAX_PRIORITY,
};
pub use request::{KeyId, Kind, OrgId, RequestId, KINDS};
