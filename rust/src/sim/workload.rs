//! What a simulation runs: a queue configuration, the orgs with their limits and
//! summary groups, and the time-ordered arrivals with their service times.

use crate::clock::Nanos;
use crate::dispatcher::Dispatcher;
use crate::error::{CoreError, CoreResult};
use crate::limits::{
    check_cost, check_priority, Config, KeyLimits, OrgLimits, PairLimits, PolicyKind, RateLimit, DEFAULT_PRIORITY,
};
use crate::request::Kind;

/// One request of a workload. 32 bytes, so a 10-million-request workload is 320 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When the request is enqueued.
    pub at: Nanos,
    /// How long it holds a slot once dispatched.
    pub service: Nanos,
    /// Index into [`Workload::orgs`].
    pub org: u32,
    /// 0: the org's default key; `n`: the org's key `OrgSpec::keys[n - 1]`.
    pub key: u32,
    /// Units its rate limits are charged (1 unless given).
    pub cost: u32,
    pub kind: Kind,
    /// 0 to 9, higher starts sooner within its line ([`DEFAULT_PRIORITY`] unless given).
    pub priority: u8,
}

impl Arrival {
    /// A request of org `org` with the default key, priority and cost.
    pub fn new(at: Nanos, service: Nanos, org: u32, kind: Kind) -> Self {
        Arrival { at, service, org, key: 0, cost: 1, kind, priority: DEFAULT_PRIORITY }
    }

    /// The same request under key `key` (see [`Arrival::key`]).
    pub fn with_key(mut self, key: u32) -> Self {
        self.key = key;
        self
    }

    /// The same request with priority `priority`.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// The same request costing `cost` units.
    pub fn with_cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }
}

/// What a rate limit of an [`OrgSpec`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOn {
    Org,
    Kind(Kind),
    /// The org's key `OrgSpec::keys[n - 1]`.
    Key(u32),
    /// Each named key of the org on its own.
    EveryKey,
}

/// An org of a workload: its name, a group label for summary rows, and limit overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSpec {
    pub name: String,
    /// Orgs with the same group are merged into one summary row ("flood", "quiet").
    pub group: String,
    /// Per-kind overrides of the config's default limits.
    pub limits: Vec<(Kind, PairLimits)>,
    /// The org's own limits (`fair_share`).
    pub org_limits: OrgLimits,
    /// Names of the org's concurrency keys; [`Arrival::key`] `n` is `keys[n - 1]`.
    pub keys: Vec<String>,
    /// Limits of single keys, by [`Arrival::key`] number.
    pub key_limits: Vec<(u32, KeyLimits)>,
    /// Rate limits (`fair_share`).
    pub rates: Vec<(RateOn, RateLimit)>,
}

impl OrgSpec {
    /// An org with the default limits, in a group of its own.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        OrgSpec {
            group: name.clone(),
            name,
            limits: Vec::new(),
            org_limits: OrgLimits::default(),
            keys: Vec::new(),
            key_limits: Vec::new(),
            rates: Vec::new(),
        }
    }

    /// The same org with its own limits.
    pub fn with_org_limits(mut self, limits: OrgLimits) -> Self {
        self.org_limits = limits;
        self
    }

    /// The same org with concurrency keys `names` (numbered from 1 in [`Arrival::key`]).
    pub fn with_keys(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.keys.extend(names);
        self
    }

    /// The same org with a rate limit.
    pub fn with_rate(mut self, on: RateOn, limit: RateLimit) -> Self {
        self.rates.push((on, limit));
        self
    }

    /// The same org in group `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The same org with `limits` for `kind`.
    pub fn with_limits(mut self, kind: Kind, limits: PairLimits) -> Self {
        self.limits.push((kind, limits));
        self
    }
}

/// Everything a simulation run needs.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Scenario name, carried into the report.
    pub name: String,
    /// The queue: policy, slots, peek set, extended delays, default limits.
    pub config: Config,
    pub orgs: Vec<OrgSpec>,
    /// Requests in non-decreasing arrival time; request id = index. Requests arriving
    /// at the same instant are enqueued in list order before the next dispatch.
    pub arrivals: Vec<Arrival>,
    /// Stop the run at this time (requests not yet dispatched are counted, not waited on).
    pub horizon: Option<Nanos>,
    /// Interval of the pending-per-org time series; `None` records none.
    pub sample_every: Option<Nanos>,
    /// Record every dispatch in [`Report::trace`](super::Report::trace) (small workloads only).
    pub trace: bool,
}

impl Workload {
    /// The same workload under `policy`.
    pub fn with_policy(mut self, policy: PolicyKind) -> Self {
        self.config.policy = policy;
        self
    }

    /// The same arrivals with every `fair_share` feature taken out — keys, priorities
    /// and costs back to the defaults, no org, key or rate limits — as `peek_set`
    /// (which refuses them) runs them: what the reference platform would do.
    pub fn without_fair_share_features(mut self) -> Self {
        for a in &mut self.arrivals {
            *a = Arrival::new(a.at, a.service, a.org, a.kind);
        }
        for spec in &mut self.orgs {
            spec.org_limits = OrgLimits::default();
            spec.keys.clear();
            spec.key_limits.clear();
            spec.rates.clear();
        }
        self
    }

    pub(super) fn validate(&self) -> CoreResult<()> {
        self.config.validate()?;
        if self.orgs.is_empty() {
            return Err(CoreError::invalid("orgs", 0, "at least one org"));
        }
        if self.orgs.len() > u32::MAX as usize {
            return Err(CoreError::invalid("orgs", self.orgs.len(), "at most 2^32 - 1 orgs"));
        }
        for spec in &self.orgs {
            Dispatcher::check_org_name(&spec.name)?;
            spec.limits.iter().try_for_each(|(_, l)| l.validate())?;
            spec.org_limits.validate()?;
            spec.keys.iter().try_for_each(|k| Dispatcher::check_key_name(k))?;
            spec.key_limits.iter().try_for_each(|(_, l)| l.validate())?;
            spec.rates.iter().try_for_each(|(_, l)| l.validate())?;
            let keys = spec.keys.len() as u32;
            for &key in spec.key_limits.iter().map(|(k, _)| k).chain(spec.rates.iter().filter_map(|(on, _)| match on {
                RateOn::Key(k) => Some(k),
                _ => None,
            })) {
                if key == 0 || key > keys {
                    return Err(CoreError::invalid("key number", key, format!("1 to the org's {keys} keys")));
                }
            }
        }
        let mut last = 0;
        for (i, a) in self.arrivals.iter().enumerate() {
            if a.at < last {
                return Err(CoreError::invalid("arrival time", a.at, format!("arrivals sorted by time (request {i})")));
            }
            if a.org as usize >= self.orgs.len() {
                return Err(CoreError::invalid("arrival org", a.org, format!("an index below {}", self.orgs.len())));
            }
            let keys = self.orgs[a.org as usize].keys.len();
            if a.key as usize > keys {
                return Err(CoreError::invalid("arrival key", a.key, format!("0 (the default) to {keys}")));
            }
            check_priority(a.priority)?;
            check_cost(a.cost)?;
            last = a.at;
        }
        if self.sample_every == Some(0) {
            return Err(CoreError::invalid("sample_every", 0, "an interval greater than 0"));
        }
        Ok(())
    }
}
