//! What the event loop drives: the [`Engine`] interface, and the real dispatcher
//! behind it. The other engine is the FIFO [`Baseline`](super::Baseline).

use std::sync::Arc;

use crate::clock::{Nanos, VirtualClock, NANOS_PER_SEC};
use crate::dispatcher::{Dispatcher, Event, NewRequest, RateScope, RequestOptions};
use crate::error::{CoreError, CoreResult};
use crate::limits::Config;
use crate::request::{KeyId, OrgId};

use super::{Arrival, RateOn, Workload};

/// Leases in simulation: far longer than any service time, so none ever expires.
const SIM_LEASE: Nanos = 10 * 365 * 24 * 3600 * NANOS_PER_SEC;

/// A first dispatch or re-dispatch, as the loop needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Start {
    /// What to hand back on completion (a lease, or a FIFO pair index).
    pub handle: u64,
    pub id: u64,
    pub attempt: u32,
}

/// What the event loop drives: the real dispatcher, or the FIFO baseline.
pub(super) trait Engine {
    /// Enqueues `batch`; request `id` is `arrivals[id]` (its key, priority and cost).
    fn enqueue(&mut self, batch: &[NewRequest], arrivals: &[Arrival]) -> CoreResult<()>;
    fn dispatch(&mut self, out: &mut Vec<Start>);
    fn complete(&mut self, handle: u64) -> CoreResult<()>;
    fn next_wakeup(&mut self) -> Option<Nanos>;
    /// Reports extended delays since the last call as `(org index, requests moved)`.
    fn drain_delays(&mut self, sink: &mut dyn FnMut(u32, u32));
}

/// The real [`Dispatcher`] on the loop's virtual clock.
pub(super) struct DispatcherEngine {
    dispatcher: Dispatcher,
    /// Per org, the handles of its keys in [`OrgSpec::keys`](super::OrgSpec::keys) order.
    keys: Vec<Vec<KeyId>>,
    batch: Vec<(NewRequest, RequestOptions)>,
}

impl DispatcherEngine {
    /// A dispatcher with the workload's config and orgs (org `i` gets handle `i`),
    /// reading time from `clock`, with leases that never expire.
    pub fn new(workload: &Workload, clock: &VirtualClock) -> CoreResult<Self> {
        let config = Config { lease: SIM_LEASE, ..workload.config.clone() };
        let mut dispatcher = Dispatcher::new(config, Arc::new(clock.clone()))?;
        let mut keys = Vec::with_capacity(workload.orgs.len());
        for (i, spec) in workload.orgs.iter().enumerate() {
            let org = dispatcher.org(&spec.name)?;
            if org != OrgId(i as u32) {
                return Err(CoreError::invalid("org name", &spec.name, "names unique within a workload"));
            }
            for &(kind, limits) in &spec.limits {
                dispatcher.set_limits(org, kind, limits)?;
            }
            dispatcher.set_org_limits(org, spec.org_limits)?;
            let handles = spec.keys.iter().map(|k| dispatcher.key(org, k)).collect::<CoreResult<Vec<_>>>()?;
            for &(n, limits) in &spec.key_limits {
                dispatcher.set_key_limits(handles[n as usize - 1], Some(limits))?;
            }
            for &(on, limit) in &spec.rates {
                let scope = match on {
                    RateOn::Org => RateScope::Org(org),
                    RateOn::Kind(kind) => RateScope::Pair(org, kind),
                    RateOn::Key(n) => RateScope::Key(handles[n as usize - 1]),
                    RateOn::EveryKey => RateScope::EveryKey(org),
                };
                dispatcher.set_rate_limit(scope, Some(limit))?;
            }
            keys.push(handles);
        }
        Ok(DispatcherEngine { dispatcher, keys, batch: Vec::new() })
    }
}

impl Engine for DispatcherEngine {
    fn enqueue(&mut self, batch: &[NewRequest], arrivals: &[Arrival]) -> CoreResult<()> {
        self.batch.clear();
        self.batch.extend(batch.iter().map(|r| {
            let a = &arrivals[r.id as usize];
            let key = (a.key > 0).then(|| self.keys[a.org as usize][a.key as usize - 1]);
            (*r, RequestOptions { key, priority: a.priority, cost: a.cost })
        }));
        self.dispatcher.enqueue_with(&self.batch)
    }

    fn dispatch(&mut self, out: &mut Vec<Start>) {
        out.extend(self.dispatcher.dispatch(usize::MAX).into_iter().map(|g| Start {
            handle: g.lease,
            id: g.id,
            attempt: g.attempt,
        }));
    }

    fn complete(&mut self, handle: u64) -> CoreResult<()> {
        self.dispatcher.ack(handle).map(|_| ())
    }

    fn next_wakeup(&mut self) -> Option<Nanos> {
        self.dispatcher.next_wakeup()
    }

    fn drain_delays(&mut self, sink: &mut dyn FnMut(u32, u32)) {
        for event in self.dispatcher.take_events() {
            if let Event::ExtendedDelay { org, count, .. } = event {
                sink(org.0, count);
            }
        }
    }
}
