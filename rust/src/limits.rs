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

/// What `fair_share` divides slot-time between at the top of its tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shares {
    /// Orgs (the default): an org's share is its own however many kinds and keys it
    /// uses; within an org its pairs share its slot-time, within a pair its keys.
    PerOrg,
    /// Each (org, kind) pair, as before the hierarchy: an org backlogged in three kinds
    /// holds three shares. Keys, priorities, org caps and rate limits work as under
    /// `PerOrg`; only the org level's weight and fairness between orgs are absent.
    PerPair,
}

impl Shares {
    /// The name as users write it.
    pub fn name(self) -> &'static str {
        match self {
            Shares::PerOrg => "per_org",
            Shares::PerPair => "per_pair",
        }
    }
}

impl std::str::FromStr for Shares {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "per_org" => Ok(Shares::PerOrg),
            "per_pair" => Ok(Shares::PerPair),
            other => Err(CoreError::invalid("shares", other, "'per_org' or 'per_pair'")),
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
    /// How long a queued request waits to rise one priority level (`fair_share`):
    /// a request of priority `p` that has waited `k × aging` is ordered with the
    /// requests of priority `p + k` enqueued now. At least 1 ns (reference: 10 s).
    pub aging: Nanos,
    /// What `fair_share` shares slot-time between at the top: orgs or (org, kind) pairs.
    pub shares: Shares,
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
            aging: DEFAULT_AGING,
            shares: Shares::PerOrg,
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
        if self.aging == 0 {
            return Err(CoreError::invalid("aging", self.aging, "a duration greater than 0"));
        }
        self.default_limits.iter().try_for_each(PairLimits::validate)
    }
}

/// Default of [`Config::aging`]: one priority level per 10 s of waiting.
pub const DEFAULT_AGING: Nanos = 10 * NANOS_PER_SEC;

/// The longest interval per unit a rate limit may have (about 9,200 s): a burst of
/// [`MAX_COST`] such intervals still fits the nanosecond axis twice over.
const MAX_INTERVAL: Nanos = Nanos::MAX / (2 * MAX_COST as u64);

/// The highest priority; priorities run from 0 (lowest) to this, higher starts sooner.
pub const MAX_PRIORITY: u8 = 9;

/// The priority of a request that names none.
pub const DEFAULT_PRIORITY: u8 = 5;

/// The largest cost one request may declare.
pub const MAX_COST: u32 = 1_000_000;

/// Checks a request's priority and cost (`fair_share` only accepts other values than
/// the defaults; the dispatcher checks that).
pub fn check_priority(priority: u8) -> CoreResult<()> {
    if priority > MAX_PRIORITY {
        return Err(CoreError::invalid("priority", priority, format!("0 to {MAX_PRIORITY} (higher starts sooner)")));
    }
    Ok(())
}

/// Checks a request's cost: the units its rate limits are charged.
pub fn check_cost(cost: u32) -> CoreResult<()> {
    if cost == 0 || cost > MAX_COST {
        return Err(CoreError::invalid("cost", cost, format!("1 to {MAX_COST} units")));
    }
    Ok(())
}

/// Limits of one org, over all its kinds and keys (`fair_share` only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrgLimits {
    /// The most slots the org may hold at once over all its kinds; `None`: only its
    /// pairs' caps bound it.
    pub cap: Option<u32>,
    /// Slots reserved for the org: while it holds fewer and has runnable work, it goes
    /// first. At most `cap`.
    pub min: u32,
    /// The org's share of slot-time relative to other orgs. Finite and > 0.
    pub weight: f64,
    /// Limits of each of the org's named keys that has no override of its own.
    pub per_key: KeyLimits,
}

impl Default for OrgLimits {
    fn default() -> Self {
        OrgLimits { cap: None, min: 0, weight: 1.0, per_key: KeyLimits::default() }
    }
}

impl OrgLimits {
    /// Checks the limits, naming the first bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if self.cap == Some(0) {
            return Err(CoreError::invalid("org cap", 0, "at least 1 slot, or no org cap"));
        }
        if let Some(cap) = self.cap.filter(|&cap| self.min > cap) {
            return Err(CoreError::invalid("org min", self.min, format!("at most the org cap ({cap})")));
        }
        check_weight("org weight", self.weight)?;
        self.per_key.validate()
    }
}

/// Limits of one concurrency key of an org (`fair_share` only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyLimits {
    /// The most slots the key may hold at once over all kinds; `None`: no key cap.
    pub cap: Option<u32>,
    /// The key's share of its (org, kind)'s slot-time relative to the org's other keys.
    pub weight: f64,
}

impl Default for KeyLimits {
    fn default() -> Self {
        KeyLimits { cap: None, weight: 1.0 }
    }
}

impl KeyLimits {
    /// Checks the limits, naming the first bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if self.cap == Some(0) {
            return Err(CoreError::invalid("key cap", 0, "at least 1 slot, or no key cap"));
        }
        check_weight("key weight", self.weight)
    }
}

fn check_weight(name: &'static str, weight: f64) -> CoreResult<()> {
    if !(weight.is_finite() && weight > 0.0) {
        return Err(CoreError::invalid(name, weight, "a finite number greater than 0"));
    }
    Ok(())
}

/// A rate limit: at most `rate` units of cost per `per`, with bursts up to `burst`
/// units (GCRA, the virtual-scheduling form of a token bucket of `burst` tokens
/// refilled at `rate / per`). Over any window of length `t` a limited scope starts
/// requests of total cost at most `rate × t / per + burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Units of cost per `per`. Finite and > 0.
    pub rate: f64,
    /// The period `rate` is counted over. At least 1 ns.
    pub per: Nanos,
    /// The most units that may start at once after an idle spell. At least 1.
    pub burst: u32,
}

impl RateLimit {
    /// Checks the limit, naming the first bad value.
    pub fn validate(&self) -> CoreResult<()> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(CoreError::invalid("rate", self.rate, "a finite number of units greater than 0"));
        }
        if self.per == 0 {
            return Err(CoreError::invalid("per", self.per, "a period greater than 0"));
        }
        if self.burst == 0 || self.burst > MAX_COST {
            return Err(CoreError::invalid("burst", self.burst, format!("1 to {MAX_COST} units")));
        }
        // Burst × interval must fit the nanosecond axis many times over.
        if self.interval() >= MAX_INTERVAL {
            return Err(CoreError::invalid("rate", self.rate, "at least 1 unit per 9,000 s over its period"));
        }
        Ok(())
    }

    /// Nanoseconds per unit of cost, rounded up so the limit is never exceeded.
    pub fn interval(&self) -> Nanos {
        (self.per as f64 / self.rate).ceil().max(1.0) as Nanos
    }
}

/// A cap as users read it: a number, or "none".
fn cap_text(cap: Option<u32>) -> String {
    cap.map_or_else(|| "none".to_string(), |c| c.to_string())
}

impl std::fmt::Display for KeyLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cap {}, weight {}", cap_text(self.cap), self.weight)
    }
}

impl std::fmt::Display for OrgLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cap {}, min {}, weight {}, per key: {}", cap_text(self.cap), self.min, self.weight, self.per_key)
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {} s, burst {}", self.rate, self.per as f64 / NANOS_PER_SEC as f64, self.burst)
    }
}
