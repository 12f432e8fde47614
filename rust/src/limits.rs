//! Configuration of a dispatcher: queue-wide settings and per-(org, kind) limits.

use crate::clock::{Nanos, NANOS_PER_SEC};
use crate::error::{CoreError, CoreResult};
use crate::request::KINDS;

/// Which flow-control policy a queue uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// The reference platform's flow control: one FIFO, a scanned peek set, extended delays.
    PeekSet,
    /// Per-(org, kind) lines served by weighted fair queuing on measured run time.
    FairShare,
}

impl PolicyKind {
    /// The policy's name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::PeekSet => "peek_set",
            PolicyKind::FairShare => "fair_share",
        }
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "peek_set" => Ok(PolicyKind::PeekSet),
            "fair_share" => Ok(PolicyKind::FairShare),
            other => Err(CoreError::UnknownPolicy(other.to_string())),
        }
    }
}

/// Limits of one (org, kind) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairLimits {
    /// The most slots the pair may hold at once (reference: 12). At least 1.
    pub cap: u32,
    /// Slots reserved for the pair: while it holds fewer and has work, it goes first
    /// (`fair_share` only). At most `cap`.
    pub min: u32,
    /// Share of slot-time relative to other pairs (`fair_share` only). Finite and > 0.
    pub weight: f64,
}

impl Default for PairLimits {
    fn default() -> Self {
        PairLimits { cap: 12, min: 0, weight: 1.0 }
    }
}

impl PairLimits {
    /// Checks the limits, naming the first bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if self.cap == 0 {
            return Err(CoreError::invalid(
                "cap",
                self.cap,
                "at least 1 slot (to pause a kind, set its kind slots to 0)",
            ));
        }
        if self.min > self.cap {
            return Err(CoreError::invalid("min", self.min, format!("at most the cap ({})", self.cap)));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(CoreError::invalid("weight", self.weight, "a finite number greater than 0"));
        }
        Ok(())
    }
}

/// Queue-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The flow-control policy.
    pub policy: PolicyKind,
    /// Worker slots on this node. At least 1.
    pub slots: u32,
    /// Peek set size for `peek_set` (reference: 2,000). At least 1.
    pub peek_set: u32,
    /// Extended delay per kind; `None` exempts the kind (reference: batch).
    pub extended_delay: [Option<Nanos>; KINDS],
    /// Per-kind global slot limits; `None` means only `slots` bounds the kind.
    pub kind_slots: [Option<u32>; KINDS],
    /// How long a dispatched request may run without a heartbeat before it is re-delivered.
    pub lease: Nanos,
    /// Limits of every pair that has no override, per kind.
    pub default_limits: [PairLimits; KINDS],
}

impl Default for Config {
    fn default() -> Self {
        let five_minutes = Some(300 * NANOS_PER_SEC);
        Config {
            policy: PolicyKind::FairShare,
            slots: 13,
            peek_set: 2000,
            extended_delay: [five_minutes, five_minutes, None, five_minutes],
            kind_slots: [None; KINDS],
            lease: 60 * NANOS_PER_SEC,
            default_limits: [PairLimits::default(); KINDS],
        }
    }
}

impl Config {
    /// Checks every setting, naming the first bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if self.slots == 0 {
            return Err(CoreError::invalid("slots", self.slots, "at least 1"));
        }
        if self.peek_set == 0 {
            return Err(CoreError::invalid("peek_set", self.peek_set, "at least 1 request"));
        }
        if self.lease == 0 {
            return Err(CoreError::invalid("lease", self.lease, "a duration greater than 0"));
        }
        self.default_limits.iter().try_for_each(PairLimits::validate)
    }
}
