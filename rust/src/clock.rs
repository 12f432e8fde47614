//! Time as the core sees it: nanoseconds on one axis, read from an injected clock.
//!
//! Workers use [`SystemClock`] (wall time since the UNIX epoch, so run-at times
//! read back from a store mean the same thing after a restart); the simulator
//! uses [`VirtualClock`], which only moves when told to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds on the clock's axis.
pub type Nanos = u64;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: Nanos = 1_000_000_000;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Nanos;
}

/// Wall-clock time since the UNIX epoch.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as Nanos)
    }
}

/// A clock that stands still until [`VirtualClock::set`] or [`VirtualClock::advance`] moves it.
///
/// Clones share the same time, so a simulation can hold one handle while the
/// dispatcher holds another.
#[derive(Debug, Default, Clone)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    /// A virtual clock reading `start`.
    pub fn new(start: Nanos) -> Self {
        VirtualClock(Arc::new(AtomicU64::new(start)))
    }

    /// Moves the clock to `t`; time never runs backwards, so an earlier `t` is ignored.
    pub fn set(&self, t: Nanos) {
        self.0.fetch_max(t, Ordering::SeqCst);
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Nanos) {
        self.0.fetch_add(d, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Nanos {
        self.0.load(Ordering::SeqCst)
    }
}
