"""Shared by the Python benchmarks: a closing summary of the dispatcher cycle figures.

``test_bench_dispatcher.py`` records the median of each cycle benchmark here; at
the end of the run the summary prints ns per cycle for the Rust core (through the
binding) and for the pure-Python baseline of the same policy, and their ratio.
"""

from __future__ import annotations

from typing import Any

import pytest

CYCLE_MEDIANS: dict[tuple[str, str, str], float] = {}
"""(scenario, policy, implementation) -> median seconds per enqueue + dispatch + ack cycle."""


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not CYCLE_MEDIANS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("enqueue + dispatch + ack, 1,000,000 queued over 10,000 orgs (median)")
    write(f"{'scenario':<20} {'policy':<11} {'Rust core':>12} {'pure Python':>13} {'Python / Rust':>14}")
    for scenario, policy in sorted({(s, p) for s, p, _ in CYCLE_MEDIANS}):
        rust = CYCLE_MEDIANS.get((scenario, policy, "rust"))
        python = CYCLE_MEDIANS.get((scenario, policy, "python"))
        cells = [f"{v * 1e9:,.0f} ns" if v is not None else "—" for v in (rust, python)]
        ratio = f"{python / rust:,.1f}x" if rust and python else "—"
        write(f"{scenario:<20} {policy:<11} {cells[0]:>12} {cells[1]:>13} {ratio:>14}")
