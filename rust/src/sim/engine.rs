//! What the event loop drives: the [`Engine`] interface, and the real dispatcher
//! behind it. The other engine is the FIFO [`Baseline`](super::Baseline).

use std::sync::Arc;

use crate::clock::{Nanos, VirtualClock, NANOS_PER_SEC};
use crate::dispatcher::{Dispatcher, Event, NewRequest};
use crate::error::{CoreError, CoreResult};
use crate::limits::Config;
use crate::request::OrgId;

use super::Workload;

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
    fn enqueue(&mut self, batch: &[NewRequest]) -> CoreResult<()>;
    fn dispatch(&mut self, out: &mut Vec<Start>);
    fn complete(&mut self, handle: u64) -> CoreResult<()>;
    fn next_wakeup(&mut self) -> Option<Nanos>;
    /// Reports extended delays since the last call as `(org index, requests moved)`.
    fn drain_delays(&mut self, sink: &mut dyn FnMut(u32, u32));
}

/// The real [`Dispatcher`] on the loop's virtual clock.
pub(super) struct DispatcherEngine {
    dispatcher: Dispatcher,
}

impl DispatcherEngine {
    /// A dispatcher with the workload's config and orgs (org `i` gets handle `i`),
    /// reading time from `clock`, with leases that never expire.
    pub fn new(workload: &Workload, clock: &VirtualClock) -> CoreResult<Self> {
        let config = Config { lease: SIM_LEASE, ..workload.config.clone() };
        let mut dispatcher = Dispatcher::new(config, Arc::new(clock.clone()))?;
        for (i, spec) in workload.orgs.iter().enumerate() {
            let org = dispatcher.org(&spec.name)?;
            if org != OrgId(i as u32) {
                return Err(CoreError::invalid("org name", &spec.name, "names unique within a workload"));
            }
            for &(kind, limits) in &spec.limits {
                dispatcher.set_limits(org, kind, limits)?;
            }
        }
        Ok(DispatcherEngine { dispatcher })
    }
}

impl Engine for DispatcherEngine {
    fn enqueue(&mut self, batch: &[NewRequest]) -> CoreResult<()> {
        self.dispatcher.enqueue_many(batch)
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
