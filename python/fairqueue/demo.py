"""``fairqueue demo``: one org floods thousands of futures while quiet orgs enqueue a
few; a real worker drains them from the embedded store, fairly, with a live
progress bar per org, and a table of waits at the end.

It answers seed 001's question on the spot: under ``fair_share`` a quiet org's job
waits about one job's run time, however large the flood ahead of it.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fairqueue.app import FairQueue
from fairqueue.kinds import Policy
from fairqueue.limits import Limits
from fairqueue.records import JobStatus
from fairqueue.storage.sqlite import SQLiteStorage

__all__ = ["DemoResult", "OrgWaits", "app", "callout", "run"]

NOISY = "noisy-org"

app = FairQueue(":memory:", limits=Limits(slots=13, cap=12))
"""The demo's app; :func:`run` points it at the demo's database file."""


@app.future
def callout(milliseconds: float) -> None:
    """Stands in for a callout to a slow external system."""
    time.sleep(milliseconds / 1000)


@dataclass(frozen=True)
class OrgWaits:
    """How long one org's jobs waited to be dequeued, in seconds."""

    org: str
    jobs: int
    p50: float
    p95: float
    p99: float
    max: float


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    database: Path
    policy: str
    seconds: float
    orgs: list[OrgWaits]


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(
    database: Path,
    *,
    policy: Policy = "fair_share",
    flood: int = 4000,
    quiet_orgs: int = 8,
    per_quiet_org: int = 20,
    service_ms: float = 10.0,
    console: Console | None = None,
) -> DemoResult:
    """Runs the demo against a fresh SQLite file at ``database`` and returns the waits."""
    console = console or Console()
    database.unlink(missing_ok=True)
    app.policy = policy
    app.storage = SQLiteStorage(database)
    quiet = [f"quiet-org-{i + 1}" for i in range(quiet_orgs)]
    started = time.monotonic()
    for first in range(0, flood, app.limits.futures_per_transaction):
        with app.transaction():
            for _ in range(first, min(first + app.limits.futures_per_transaction, flood)):
                callout.delay(NOISY, service_ms)

    stop_trickle = threading.Event()

    def trickle() -> None:
        # Quiet orgs enqueue one job each in turn, spread over the flood's expected drain time.
        drain = flood * service_ms / 1000 / (app.limits.cap or app.limits.slots)
        pause = drain / max(1, quiet_orgs * per_quiet_org)
        for _ in range(per_quiet_org):
            for org in quiet:
                if stop_trickle.wait(pause):
                    return
                callout.delay(org, service_ms)

    totals = {NOISY: flood, **{org: per_quiet_org for org in quiet}}
    with app.worker(), Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bars = {org: progress.add_task(org, total=n) for org, n in totals.items()}
        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        while True:
            done: dict[str, int] = {}
            for (org, _, status), n in app.storage.job_counts().items():
                if status.finished:
                    done[org] = done.get(org, 0) + n
            for org, task in bars.items():
                progress.update(task, completed=done.get(org, 0))
            if all(done.get(org, 0) >= n for org, n in totals.items()):
                break
            time.sleep(0.1)
        stop_trickle.set()
        feeder.join()
    seconds = time.monotonic() - started

    orgs = []
    for org in totals:
        records = app.storage.job_list(org=org, status=JobStatus.COMPLETED, limit=flood + per_quiet_org)
        waits = sorted(r.started_at - r.created_at for r in records if r.started_at is not None)
        orgs.append(
            OrgWaits(org, len(waits), _percentile(waits, 50), _percentile(waits, 95), _percentile(waits, 99), waits[-1])
        )
    app.storage.close()
    return DemoResult(database.resolve(), policy, seconds, orgs)


def render(result: DemoResult, console: Console) -> None:
    """Prints the per-org table of waits and where the data lives."""
    table = Table(title=f"Dequeue waits under {result.policy} ({result.seconds:.1f} s in all)")
    for column in ("org", "jobs", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column == "org" else "right")
    for row in result.orgs:
        table.add_row(row.org, str(row.jobs), *(f"{v * 1000:.0f} ms" for v in (row.p50, row.p95, row.p99, row.max)))
    console.print(table)
    console.print(f"Every job and its record are in [bold]{result.database}[/bold] (SQLite, WAL).")
