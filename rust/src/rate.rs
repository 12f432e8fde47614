//! Rate limits: the generic cell rate algorithm (GCRA) of one limited scope (an org,
//! an (org, kind) or an (org, key)).
//!
//! The state is one time, the theoretical arrival time `tat`: starting cost `c` at
//! `now` moves it to `max(tat, now) + c·T`, where `T` is the limit's interval per unit,
//! and is allowed only while the result is at most `burst·T` ahead of `now`. That is
//! a token bucket of `burst` tokens refilled one per `T`, kept in one integer and with
//! no timer: the instant a request will have room is computed, not polled for.

use crate::clock::Nanos;
use crate::limits::RateLimit;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limiter {
    pub limit: RateLimit,
    interval: Nanos,
    tat: Nanos,
}

impl Limiter {
    /// A limiter with a full bucket.
    pub fn new(limit: RateLimit) -> Self {
        Limiter { limit, interval: limit.interval(), tat: 0 }
    }

    /// Changes the limit, keeping the debt already run up (a change is not a refill).
    pub fn set(&mut self, limit: RateLimit) {
        self.limit = limit;
        self.interval = limit.interval();
    }

    /// The earliest time, not before `now`, at which `cost` units may start; `None`
    /// when they never can (`cost` above the burst).
    pub fn room_at(&self, cost: u32, now: Nanos) -> Option<Nanos> {
        if cost > self.limit.burst {
            return None;
        }
        let ahead = u64::from(self.limit.burst - cost) * self.interval;
        Some(self.tat.saturating_sub(ahead).max(now))
    }

    /// Starts `cost` units at `now`; the caller checked [`Limiter::room_at`].
    pub fn charge(&mut self, cost: u32, now: Nanos) {
        self.tat = self.tat.max(now).saturating_add(u64::from(cost) * self.interval);
    }
}
