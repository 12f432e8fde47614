"""SIGKILL soak: worker processes killed at random while they drain, and what it costs.

    python benches/soak_sigkill.py --store sqlite --jobs 20000 --kills 30 --workers 3 --json

Two phases, each on a fresh store (a SQLite file, or a schema of its own on the
PostgreSQL server of ``--dsn``, dropped afterwards), each with ``--workers``
``fairqueue worker`` processes draining short jobs (a 2-5 ms sleep) of a few orgs
under a small per-org cap (2), so that the cap slots a killed worker's jobs hold
matter:

* **baseline**: no kills, until ``--jobs`` jobs were enqueued;
* **kill**: every 1-2 s a random worker is SIGKILLed and started again at once,
  until ``--kills`` kills are done and ``--jobs`` jobs were enqueued.

The driver keeps a backlog queued throughout (it enqueues a chunk whenever the
queue runs low), so the workers are never short of work while they are measured.
The measured window runs from the first completions to the moment feeding stops;
the drain after it is not measured. The figure is the throughput of the healthy
workers: jobs completed in the window per second of healthy worker time, where a
worker process counts as healthy from its first job (a restarted process spends a
moment importing the app) until it is killed. The kill phase's figure as a
fraction of the baseline's is the ratio reported (target: at least 0.70). The
throughput of all workers together (jobs per second of the window) is reported
beside it: where the caps, not the workers, bound the rate, fewer healthy workers
each run more, and the total is the stricter figure.

After each phase every job must be completed and every repeat recorded: each job
appends a line to a file when it starts (outside the store, so a run cut short by
a kill shows too), and a job whose side effect happened k times must have
``attempts >= k``. Exit status 1 if a job was lost or a repeat went unrecorded.

``--rounds N`` alternates the phases N times (baseline, kill, baseline, kill, ...)
and reports each pair's ratio and their median.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

SUPPORT = Path(__file__).resolve().parents[1] / "tests" / "support"
DSN = os.environ.get("FAIRQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ORGS = 6
CAP = 2
SLOTS = 8
KILL_EVERY = (1.0, 2.0)
JOB_MS = (2.0, 5.0)
# Completions before the window opens: every worker has started and taken work.
WARM_UP = 100


@dataclass
class Config:
    """One soak's settings (the command line's)."""

    store: str = "sqlite"
    jobs: int = 20_000
    kills: int = 30
    workers: int = 3
    rounds: int = 1
    dsn: str = DSN
    seed: Optional[int] = None
    orgs: int = ORGS
    cap: Optional[int] = CAP
    """The per-(org, kind) cap; None: fair_share's default, no cap (the embedded
    store's workers then take their turns in native code)."""
    slots: int = SLOTS


@dataclass
class Phase:
    """What one phase measured and found."""

    kind: str
    store: str
    enqueued: int = 0
    kills: int = 0
    window_seconds: float = 0.0
    completed_in_window: int = 0
    healthy_worker_seconds: float = 0.0
    per_worker: float = 0.0
    """Jobs per second per healthy worker in the window."""
    total: float = 0.0
    """Jobs per second of all workers together in the window."""
    drain_seconds: float = 0.0
    lost: int = 0
    """Jobs not completed at the end, or completed without ever running."""
    repeats: int = 0
    """Side effects beyond the first, over all jobs."""
    unrecorded: int = 0
    """Jobs whose side effect happened more often than their recorded attempts."""
    max_attempts: int = 0
    exit_codes: list[int] = field(default_factory=list)


class Store:
    """The phase's store: its URL for the workers, and the reads the driver checks it with."""

    def __init__(self, kind: str, workdir: Path, dsn: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = workdir / f"soak-{uuid.uuid4().hex[:8]}.db"
            self.url = str(self.path)
        elif kind == "postgres":
            self.dsn = dsn
            self.schema = f"fq_soak_{uuid.uuid4().hex[:12]}"
            self.url = f"{dsn}?schema={self.schema}"
        else:
            raise ValueError(f"unknown store {kind!r}: expected 'sqlite' or 'postgres'")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.path, timeout=60)) as db:
                return db.execute(sql.format(t="fq_jobs")).fetchall()
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(sql.format(t=f'"{self.schema}".fq_jobs')).fetchall()

    def counts(self) -> dict[str, int]:
        return {status: n for status, n in self.rows("SELECT status, COUNT(*) FROM {t} GROUP BY status")}

    def queued(self) -> int:
        return int(self.rows("SELECT COUNT(*) FROM {t} WHERE status = 'queued'")[0][0])

    def attempts(self) -> dict[int, int]:
        return {job: n for job, n in self.rows("SELECT id, attempts FROM {t}")}

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class Workers:
    """The phase's worker processes, and when each lived."""

    def __init__(self, store: Store, effects: Path, config: Config) -> None:
        self.env = {
            **os.environ,
            "FQ_SOAK_STORE": store.url,
            "FQ_SOAK_CAP": "none" if config.cap is None else str(config.cap),
            "FQ_SOAK_SLOTS": str(config.slots),
            "FQ_EFFECTS": str(effects),
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        }
        self.slots = config.slots
        self.procs: list[subprocess.Popen[bytes]] = []
        self.died: dict[int, float] = {}
        """pid -> when it was killed."""

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "fairqueue", "worker", "fq_soak_jobs:app", "--slots", str(self.slots), "--no-conservation"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def spawn(self, n: int) -> None:
        self.procs = [self.start() for _ in range(n)]

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILLs a random worker and starts another in its place at once."""
        i = rng.randrange(len(self.procs))
        victim = self.procs[i]
        victim.kill()
        victim.wait()
        self.died[victim.pid] = time.time()
        self.procs[i] = self.start()

    def stop(self, registered: Callable[[], set[int]]) -> list[int]:
        """SIGTERMs every worker once it is registered in the store: by then its signal
        handlers are in place (a worker installs them, then registers), so the stop is
        a requested one that drains and exits 0, not a process killed in its start-up."""
        deadline = time.monotonic() + 120
        while not {p.pid for p in self.procs} <= registered():
            assert time.monotonic() < deadline, "a restarted worker did not register within 120 s"
            time.sleep(0.05)
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        return [p.wait(timeout=120) for p in self.procs]

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def effect_lines(effects: Path) -> list[tuple[int, int, float]]:
    if not effects.exists():
        return []
    return [(int(job), int(pid), float(at)) for job, pid, at in (line.split() for line in effects.read_text().splitlines())]


def healthy_seconds(runs: list[tuple[int, int, float]], died: dict[int, float], start: float, end: float) -> float:
    """Seconds of healthy worker time in [start, end]: each process from its first job
    to its death (or the end of the window)."""
    first: dict[int, float] = {}
    for _, pid, at in runs:
        first[pid] = min(at, first.get(pid, at))
    total = 0.0
    for pid, began in first.items():
        lo, hi = max(began, start), min(died.get(pid, end), end)
        total += max(0.0, hi - lo)
    return total


def run_phase(kind: str, config: Config, workdir: Path, rng: random.Random) -> Phase:
    """Runs one phase (``"baseline"`` or ``"kill"``) on a fresh store and checks it."""
    import fq_soak_jobs as soak
    from fairqueue.storage import open_storage

    store = Store(config.store, workdir, config.dsn)
    effects = workdir / f"effects-{uuid.uuid4().hex[:8]}.log"
    phase = Phase(kind, config.store)
    backlog = min(3000, max(200, config.jobs // 5))
    original = soak.app.storage
    soak.app.storage = open_storage(store.url)
    workers = Workers(store, effects, config)

    def feed(n: int) -> None:
        per_org = max(1, n // config.orgs)
        for org in range(config.orgs):
            soak.work.delay_many(f"org-{org}", [(round(rng.uniform(*JOB_MS), 2),) for _ in range(per_org)])
        phase.enqueued += per_org * config.orgs

    try:
        feed(backlog)
        workers.spawn(config.workers)
        deadline = time.monotonic() + 120
        while store.counts().get("completed", 0) < WARM_UP:
            assert time.monotonic() < deadline, "the workers did not start working within 120 s"
            time.sleep(0.05)
        start, done_at_start = time.time(), store.counts().get("completed", 0)
        next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        kills_wanted = config.kills if kind == "kill" else 0
        while phase.kills < kills_wanted or phase.enqueued < config.jobs:
            if store.queued() < backlog:
                feed(backlog // 2)
            if phase.kills < kills_wanted and time.monotonic() >= next_kill:
                workers.kill_one(rng)
                phase.kills += 1
                next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
            time.sleep(0.05)
        end, done_at_end = time.time(), store.counts().get("completed", 0)
        deadline = time.monotonic() + 600
        while store.counts().get("completed", 0) < phase.enqueued:
            assert time.monotonic() < deadline, f"not drained within 600 s: {store.counts()}"
            time.sleep(0.1)
        phase.drain_seconds = time.time() - end
        phase.exit_codes = workers.stop(lambda: {w.info.pid for w in soak.app.storage.worker_list() if w.alive})
    finally:
        workers.kill_all()
        soak.app.storage.close()
        soak.app.storage = original

    runs = effect_lines(effects)
    phase.window_seconds = end - start
    phase.completed_in_window = done_at_end - done_at_start
    phase.healthy_worker_seconds = healthy_seconds(runs, workers.died, start, end)
    phase.per_worker = phase.completed_in_window / phase.healthy_worker_seconds
    phase.total = phase.completed_in_window / phase.window_seconds
    counts = store.counts()
    attempts = store.attempts()
    store.drop()
    ran = collections.Counter(job for job, _, _ in runs)
    phase.lost = (phase.enqueued - counts.get("completed", 0)) + sum(1 for job in attempts if job not in ran)
    phase.repeats = sum(n - 1 for n in ran.values())
    phase.unrecorded = sum(1 for job, n in ran.items() if n > attempts.get(job, 0))
    phase.max_attempts = max(attempts.values())
    return phase


def soak(config: Config, workdir: Path) -> dict[str, Any]:
    """Alternates baseline and kill phases ``config.rounds`` times; the report."""
    rng = random.Random(config.seed)
    phases: list[Phase] = []
    for _ in range(config.rounds):
        phases.append(run_phase("baseline", config, workdir, rng))
        phases.append(run_phase("kill", config, workdir, rng))
    pairs = list(zip(phases[::2], phases[1::2]))
    ratios = [k.per_worker / b.per_worker for b, k in pairs]
    totals = [k.total / b.total for b, k in pairs]
    return {
        "config": asdict(config),
        "phases": [asdict(p) for p in phases],
        "ratios": ratios,
        "ratio": statistics.median(ratios),
        "total_ratios": totals,
        "total_ratio": statistics.median(totals),
        "lost": sum(p.lost for p in phases),
        "unrecorded": sum(p.unrecorded for p in phases),
        "kills": sum(p.kills for p in phases),
        "jobs": sum(p.enqueued for p in phases),
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per phase, at least (default 20000)")
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs in each kill phase (default 30)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="baseline/kill pairs, alternating (default 1)")
    parser.add_argument("--dsn", default=DSN, help="the PostgreSQL server for --store postgres")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kills' and jobs' randomness")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    for name, least in (("jobs", 1), ("kills", 0), ("workers", 1), ("rounds", 1)):
        if getattr(args, name) < least:
            parser.error(f"--{name} {getattr(args, name)} must be at least {least}")
    config = Config(args.store, args.jobs, args.kills, args.workers, args.rounds, args.dsn, args.seed)
    sys.path.insert(0, str(SUPPORT))
    with tempfile.TemporaryDirectory(prefix="fq-soak-") as tmp:
        report = soak(config, Path(tmp))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for p in report["phases"]:
            print(f"{p['kind']:>8} {p['store']}: {p['enqueued']} jobs, {p['kills']} kills, "
                  f"{p['per_worker']:.0f} jobs/s per healthy worker ({p['total']:.0f} in all) over {p['window_seconds']:.1f} s, "
                  f"drain {p['drain_seconds']:.1f} s; lost {p['lost']}, repeats {p['repeats']} "
                  f"(unrecorded {p['unrecorded']}), max attempts {p['max_attempts']}, exits {p['exit_codes']}")  # fmt: skip
        print(f"kill/baseline per healthy worker: {', '.join(f'{r:.2f}' for r in report['ratios'])} "
              f"(median {report['ratio']:.2f}; target >= 0.70); all workers together: "
              f"{', '.join(f'{r:.2f}' for r in report['total_ratios'])} (median {report['total_ratio']:.2f})")  # fmt: skip
    return 1 if report["lost"] or report["unrecorded"] else 0


if __name__ == "__main__":
    sys.exit(main())
