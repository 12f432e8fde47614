"""Retention soak: many jobs through one worker with a short retention; the store levels off.

    python benches/soak_retention.py --jobs 500000 --json            # SQLite
    python benches/soak_retention.py --store postgres --jobs 200000  # PostgreSQL (--dsn)

One in-process worker (its default 13 slots; its pruner every ``--prune-every``
seconds, 5 by default against the production 30, and every second while behind) drains no-op futures of 10 orgs from a fresh
store, while the driver keeps a backlog of about ``--backlog`` jobs queued. The
retention is short: completed jobs 5 s, history 120 s thinned to a point a minute
after 30 s. Every ``--sample`` seconds the driver records the store's size (SQLite:
the file and its WAL; PostgreSQL: ``pg_total_relation_size`` of the tables), the rows
of ``fq_jobs``, ``fq_history`` and ``fq_usage``, and the jobs completed since the last
sample. The report says whether size and rows level off (the largest value in the
second half of the run against the largest in the first) and compares the drain
rate of the last tenth of the run with the first tenth (after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import fairqueue as fq
from fairqueue.runtime.duties.pruning import Pruning
from fairqueue.storage import open_storage

DSN = os.environ.get("FAIRQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ORGS = 10
TABLES = ("fq_jobs", "fq_history", "fq_usage", "fq_batch_errors")


SUPPORT = Path(__file__).resolve().parents[1] / "tests" / "support"
sys.path.insert(0, str(SUPPORT))
from fq_retention_jobs import app, noop  # noqa: E402 (the app of the soak, importable by path)


@dataclass
class Config:
    """One soak's settings (the command line's)."""

    store: str = "sqlite"
    jobs: int = 500_000
    backlog: int = 20_000
    sample: float = 5.0
    completed: Optional[float] = 5.0
    """Seconds completed jobs are kept (None: forever, the baseline without pruning)."""
    prune_every: Optional[float] = 5.0
    """Seconds between pruner runs once caught up (None: the worker's own, 30 s): 5 s so
    that a soak of a minute spans a dozen pruning cycles."""
    dsn: str = DSN
    folder: Optional[str] = None


@dataclass
class Sample:
    """The store at one moment of the soak."""

    t: float
    completed: int
    bytes: int
    rows: dict[str, int]


@dataclass
class Report:
    """What a soak measured."""

    store: str
    jobs: int
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    pruned_jobs: int = 0
    drain_start: float = 0.0
    """Jobs/s over the first tenth of the run (after the first sample)."""
    drain_end: float = 0.0
    """Jobs/s over the last tenth of the run (while the backlog was still fed)."""
    peak_first_half: dict[str, int] = field(default_factory=dict)
    peak_second_half: dict[str, int] = field(default_factory=dict)

    @property
    def levelled(self) -> bool:
        """Size and job rows in the second half stay within 1.25x of the first half's peak."""
        return all(self.peak_second_half[k] <= 1.25 * max(self.peak_first_half[k], 1) for k in ("bytes", "fq_jobs"))


def _measure(store: str, where: str) -> tuple[int, dict[str, int]]:
    if store == "sqlite":
        path = Path(where)
        size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
            rows = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}
        return size, rows
    import psycopg

    dsn, schema = where.split("|")
    with psycopg.connect(dsn, autocommit=True) as conn:
        size = sum(conn.execute("SELECT pg_total_relation_size(%s)", (f'"{schema}".{t}',)).fetchone()[0]  # type: ignore[index]
                   for t in TABLES)  # fmt: skip
        rows = {t: conn.execute(f'SELECT COUNT(*) FROM "{schema}".{t}').fetchone()[0] for t in TABLES}  # type: ignore[index]
    return size, rows


def _rate(samples: list[Sample]) -> float:
    if len(samples) < 2 or samples[-1].t == samples[0].t:
        return 0.0
    return (samples[-1].completed - samples[0].completed) / (samples[-1].t - samples[0].t)


def run(config: Config) -> Report:
    """Runs one soak on a fresh store and returns what it measured."""
    folder = Path(config.folder or tempfile.mkdtemp(prefix="fq-soak-retention-"))
    schema = f"fq_soak_{uuid.uuid4().hex[:8]}"
    if config.store == "sqlite":
        url = where = str(folder / "soak.db")
    else:
        url, where = f"{config.dsn}?schema={schema}", f"{config.dsn}|{schema}"
    app.storage = open_storage(url)
    app.retention = fq.Retention(completed=config.completed, history=120, history_full=30)
    job = noop
    worker = app.worker()
    pruning = next(d for d in worker.duties if isinstance(d, Pruning))
    if config.prune_every is not None:
        pruning.interval = config.prune_every
    report = Report(config.store, config.jobs)
    enqueued = 0
    stop = threading.Event()

    def feed() -> None:
        nonlocal enqueued
        org = 0
        while enqueued < config.jobs and not stop.is_set():
            queued = sum(n for (_, _, s), n in app.storage.job_counts(live=True).items() if s is fq.JobStatus.QUEUED)
            if queued >= config.backlog:
                stop.wait(0.05)
                continue
            n = min(5_000, config.jobs - enqueued)
            job.delay_many(f"org-{org % ORGS}", [[i] for i in range(n)])
            enqueued += n
            org += 1

    feeder = threading.Thread(target=feed, name="soak-feed", daemon=True)
    started = time.monotonic()
    worker.start()
    feeder.start()
    try:
        while feeder.is_alive() or worker.completed < config.jobs:
            stop.wait(config.sample)
            size, rows = _measure(config.store, where)
            report.samples.append(Sample(round(time.monotonic() - started, 2), worker.completed, size, rows))
            if not feeder.is_alive() and worker.completed >= config.jobs:
                break
        fed = [s for s in report.samples if s.completed < config.jobs * 0.98] or report.samples
        tenth = max(2, len(fed) // 10)
        report.drain_start = round(_rate(fed[1 : 1 + tenth]), 1)
        report.drain_end = round(_rate(fed[-tenth:]), 1)
        half = len(report.samples) // 2
        for name, part in (("peak_first_half", report.samples[:half]), ("peak_second_half", report.samples[half:])):
            peaks = {"bytes": max((s.bytes for s in part), default=0)}
            peaks.update({t: max((s.rows[t] for s in part), default=0) for t in TABLES})
            setattr(report, name, peaks)
        report.seconds = round(time.monotonic() - started, 1)
        report.pruned_jobs = pruning.total.jobs
    finally:
        stop.set()
        worker.stop(grace=5)
        app.storage.close()
        if config.store == "postgres":
            import psycopg

            with psycopg.connect(config.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=Config.jobs)
    parser.add_argument("--backlog", type=int, default=Config.backlog)
    parser.add_argument("--sample", type=float, default=Config.sample, help="seconds between samples")
    parser.add_argument("--completed", type=float, default=Config.completed, help="seconds completed jobs are kept")
    parser.add_argument("--keep", action="store_true", help="keep every job (the A/B baseline: no pruning)")
    parser.add_argument("--prune-every", type=float, default=Config.prune_every,
                        help="seconds between pruner runs once caught up (the worker's own: 30)")
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    completed = None if args.keep else args.completed
    config = Config(args.store, args.jobs, args.backlog, args.sample, completed, args.prune_every, args.dsn)
    report = run(config)
    if args.json:
        print(json.dumps({**asdict(report), "levelled": report.levelled}, indent=2))
    else:
        for s in report.samples:
            print(f"{s.t:8.1f} s  {s.completed:>9,} done  {s.bytes / 2**20:8.1f} MiB  "
                  + "  ".join(f"{t} {n:>8,}" for t, n in s.rows.items()))  # fmt: skip
        print(f"drain: {report.drain_start:,.0f} jobs/s at the start, {report.drain_end:,.0f} at the end; "
              f"peaks first/second half: {report.peak_first_half} / {report.peak_second_half}; "
              f"levelled: {report.levelled}; {report.pruned_jobs:,} jobs pruned in {report.seconds} s")
    return 0 if report.levelled else 1


if __name__ == "__main__":
    sys.exit(main())
