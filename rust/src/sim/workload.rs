//! What a simulation runs: a queue configuration, the orgs with their limits and
//! summary groups, and the time-ordered arrivals with their service times.

use crate::clock::Nanos;
use crate::dispatcher::Dispatcher;
use crate::error::{CoreError, CoreResult};
use crate::limits::{Config, PairLimits, PolicyKind};
use crate::request::Kind;

/// One request of a workload. 24 bytes, so a 10-million-request workload is 240 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When the request is enqueued.
    pub at: Nanos,
    /// How long it holds a slot once dispatched.
    pub service: Nanos,
    /// Index into [`Workload::orgs`].
    pub org: u32,
    pub kind: Kind,
}

/// An org of a workload: its name, a group label for summary rows, and limit overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct OrgSpec {
    pub name: String,
    /// Orgs with the same group are merged into one summary row ("flood", "quiet").
    pub group: String,
    /// Per-kind overrides of the config's default limits.
    pub limits: Vec<(Kind, PairLimits)>,
}

impl OrgSpec {
    /// An org with the default limits, in a group of its own.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        OrgSpec { group: name.clone(), name, limits: Vec::new() }
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
        }
        let mut last = 0;
        for (i, a) in self.arrivals.iter().enumerate() {
            if a.at < last {
                return Err(CoreError::invalid("arrival time", a.at, format!("arrivals sorted by time (request {i})")));
            }
            if a.org as usize >= self.orgs.len() {
                return Err(CoreError::invalid("arrival org", a.org, format!("an index below {}", self.orgs.len())));
            }
            last = a.at;
        }
        if self.sample_every == Some(0) {
            return Err(CoreError::invalid("sample_every", 0, "an interval greater than 0"));
        }
        Ok(())
    }
}
