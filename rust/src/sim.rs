//! The dispatcher on a virtual clock: workloads, scenarios and per-org wait reports.
