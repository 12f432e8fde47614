//! The dispatcher on a virtual clock: workloads, scenarios and per-org wait reports.
//!
//! A [`Workload`] is a queue configuration, a list of orgs (with their limits and a
//! group label for summaries) and a time-ordered list of [`Arrival`]s, each with the
//! service time it will take once a slot runs it. [`simulate`] drives the real
//! [`Dispatcher`] through a discrete-event loop on a [`VirtualClock`]:
//!
//! 1. advance the clock to the next event: the next arrival, the next completion, or
//!    [`Dispatcher::next_wakeup`] (a delayed request falling due);
//! 2. ack every request that completes at that instant (slots come free first),
//!    then enqueue every request that arrives at that instant, in list order;
//! 3. call `dispatch(usize::MAX)` and schedule each grant's completion at
//!    `now + service` in a heap whose ties break on a sequence number.
//!
//! A request's wait is its first dispatch time minus its arrival time. Leases are
//! set far longer than any service time, so nothing is ever re-delivered.
//!
//! [`simulate_fifo`] runs the same loop over a plain first-come-first-served queue
//! (see [`Baseline`]) so that a policy can be compared with the simplest scheduler on
//! the very same arrivals. Scenarios ([`seed_worked_example`], [`noisy_neighbour`],
//! [`two_orgs_service_times`], [`many_orgs`], [`noisy_user`], [`rate_limited`],
//! [`priorities`]) are plain functions returning a workload; [`run_scenario`] is the entry point of `fairqueue simulate SCENARIO`.
//!
//! Everything is deterministic: random workloads draw from [`SplitMix64`] seeded
//! by the caller, and the loop has no other source of nondeterminism.
//!
//! The submodules follow those steps: `workload` (what a run is given), `engine`
//! (the dispatcher behind the loop's interface) and `baseline` (the FIFO behind it),
//! `event_loop` (the loop itself), `tally` and `series` (per-org accumulators and the
//! pending-per-org time series), `report` (what a run measured, and its tables),
//! `scenarios` and `random`. Every public item is re-exported here.
//!
//! [`Dispatcher`]: crate::dispatcher::Dispatcher
//! [`Dispatcher::next_wakeup`]: crate::dispatcher::Dispatcher::next_wakeup

mod baseline;
mod engine;
mod event_loop;
mod random;
mod report;
mod scenarios;
mod series;
mod tally;
mod workload;

use crate::clock::{Nanos, VirtualClock, NANOS_PER_SEC};
use crate::error::CoreResult;
use crate::limits::PolicyKind;

use baseline::FifoEngine;
use engine::DispatcherEngine;

pub use baseline::Baseline;
pub use random::SplitMix64;
pub use report::{format_duration, Dispatched, KeyRow, OrgRow, Report, Sample};
pub use scenarios::{
    many_orgs, noisy_neighbour, noisy_neighbour_with, noisy_user, priorities, rate_limited, run_scenario,
    run_scenario_fifo, scenario, seed_worked_example, two_orgs_service_times, NoisyParams, ScenarioOptions,
    PRIORITIES_AGING, RATE_LIMITED, SCENARIOS,
};
pub use workload::{Arrival, OrgSpec, RateOn, Workload};

/// One millisecond in nanoseconds.
pub const MS: Nanos = NANOS_PER_SEC / 1000;

/// Runs `workload` on the real dispatcher under `workload.config.policy`.
pub fn simulate(workload: &Workload) -> CoreResult<Report> {
    workload.validate()?;
    let clock = VirtualClock::new(0);
    let mut engine = DispatcherEngine::new(workload, &clock)?;
    event_loop::run(workload, &mut engine, &clock, workload.config.policy.name())
}

/// Runs `workload` on a plain FIFO queue (see [`Baseline`]) with the same slots.
pub fn simulate_fifo(workload: &Workload, baseline: Baseline) -> CoreResult<Report> {
    workload.validate()?;
    let clock = VirtualClock::new(0);
    let mut engine = FifoEngine::new(workload, baseline);
    event_loop::run(workload, &mut engine, &clock, baseline.name())
}

/// Runs `workload` under `fair_share`, `peek_set` and the same-caps FIFO, in that order.
pub fn compare(workload: &Workload) -> CoreResult<Vec<Report>> {
    Ok(vec![
        simulate(&workload.clone().with_policy(PolicyKind::FairShare))?,
        simulate(&workload.clone().with_policy(PolicyKind::PeekSet))?,
        simulate_fifo(workload, Baseline::SameCaps)?,
    ])
}
