"""fairqueue's PostgreSQL store against pgqueuer on the same server, in one run, alternating.

Run: ``python benches/pg_vs_pgqueuer.py --rounds 3`` (needs ``pip install -e '.[bench]'``
for pgqueuer and asyncpg, and the server of ``FAIRQUEUE_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``). Every measurement works in a fresh
schema of its own and drops it. Per round, per row, fairqueue and pgqueuer run back
to back (which goes first alternates from round to round), so each ratio compares
two runs minutes apart on the same loaded machine: read the ratios, not the figures.

Rows:

* drain: N no-op jobs (default 20,000) over 1 and over 100 orgs, bulk-enqueued into
  1, 2 or 4 worker processes already running and idle; jobs/s from the first start
  to the last completion, both read from the database (fairqueue: ``started_at``
  and ``finished_at``; pgqueuer: its log's ``picked`` and ``successful`` rows).
  pgqueuer has no tenants: its jobs all go to one entrypoint, the org in the
  payload, so its 1-org and 100-org rows run the same work.
* single enqueue: one job per call from one client (default 2,000 calls), each its
  own durable commit.
* bulk enqueue: calls of 10,000 jobs (default 20,000 jobs).

The figures and how they were read: benches/README.md, "PostgreSQL against pgqueuer".

This file is also the worker processes' module: ``fairqueue worker
pg_vs_pgqueuer:app`` and ``python pg_vs_pgqueuer.py --pgqueuer-worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

import fairqueue as fq
from fairqueue.storage.postgres import PostgresStorage

DSN = os.environ.get("FAIRQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
HERE = Path(__file__).resolve().parent
# No-op jobs finish at once, so a worker's batch per round trip is its free slots:
# 64 per process, for fairqueue (thread slots) and pgqueuer (batch size) alike.
SLOTS = 64
# fairqueue's defaults: under fair_share no per-org cap, so one org may hold every
# slot of 4 processes and no claim locks or counts an org. FQ_CAP=N runs the
# drains with a cap of N per org (e.g. 256, which 4 processes of 64 slots never
# reach): what enforcing a cap across hosts costs (benches/README.md).
CAP = int(os.environ["FQ_CAP"]) if os.environ.get("FQ_CAP", "none") != "none" else None
WARM_UP_ORG = "warm-up"
BULK_CALL = 10_000
# Seconds the worker processes get to start (imports, connections) before the jobs come.
STARTUP = 3.0

if __name__ == "__main__":
    # Run as a script, this file is __main__, whose handlers no worker can import:
    # everything runs from the module the workers import (pg_vs_pgqueuer) instead.
    sys.path.insert(0, str(HERE))
    import pg_vs_pgqueuer

    pg_vs_pgqueuer.main()
    sys.exit(0)

app = fq.FairQueue(
    os.environ.get("FQ_STORE", ":memory:"),
    limits=fq.Limits(slots=SLOTS, cap=CAP, retry=fq.NO_RETRY),
)


@app.future
def noop() -> None:
    """The job every drain runs: nothing, so what is measured is the queue."""


# ----- fairqueue ----------------------------------------------------------------------


def fq_url(schema: str) -> str:
    return f"{DSN}?schema={schema}"


def fq_use(schema: str) -> PostgresStorage:
    store = PostgresStorage(DSN, schema=schema)
    app.storage = store
    return store


def fq_unfinished(store: PostgresStorage) -> bool:
    """Whether a job is queued or processing: probes of the two partial indexes,
    light enough to poll every 20 ms."""
    s = store.db.s
    rows = store.db.read(
        f"SELECT EXISTS (SELECT 1 FROM {s}.fq_jobs WHERE status = 'queued')"
        f" OR EXISTS (SELECT 1 FROM {s}.fq_jobs WHERE status = 'processing')"
    )
    return bool(rows[0][0])


def fq_start_workers(schema: str, processes: int) -> list[subprocess.Popen[bytes]]:
    environment = {**os.environ, "FQ_STORE": fq_url(schema), "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return [
        subprocess.Popen(
            # Without resource conservation: it would (rightly) throttle a host this busy.
            [sys.executable, "-m", "fairqueue", "worker", "pg_vs_pgqueuer:app", "--slots", str(SLOTS), "--no-conservation"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]


def fq_drain(jobs: int, orgs: int, processes: int) -> float:
    """jobs/s of ``processes`` fairqueue workers draining ``jobs`` no-op jobs over ``orgs`` orgs."""
    schema = fresh_schema("fq")
    store = fq_use(schema)
    workers = fq_start_workers(schema, processes)
    try:
        time.sleep(STARTUP)
        noop.delay(WARM_UP_ORG)
        wait_until_done(lambda: fq_unfinished(store))
        for org, count in split(jobs, orgs):
            for start in range(0, count, BULK_CALL):
                noop.delay_many(org, [() for _ in range(min(BULK_CALL, count - start))])
        wait_until_done(lambda: fq_unfinished(store))
        row = store.db.read(
            f"SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM {store.db.s}.fq_jobs WHERE org <> %s AND status = 'completed'",
            (WARM_UP_ORG,),
        )[0]
        assert row[0] == jobs, f"fairqueue completed {row[0]} of {jobs} jobs"
        return jobs / (float(row[2]) - float(row[1]))
    finally:
        stop(workers)
        store.close()
        drop_schema(schema)


def fq_enqueue_single(calls: int) -> float:
    """jobs/s of ``calls`` single enqueues (``noop.delay``), one client."""
    schema = fresh_schema("fq")
    store = fq_use(schema)
    try:
        noop.delay(WARM_UP_ORG)  # the pool's connections and prepared statements are warm
        started = time.perf_counter()
        for i in range(calls):
            noop.delay(f"org-{i % 100}")
        return calls / (time.perf_counter() - started)
    finally:
        store.close()
        drop_schema(schema)


def fq_enqueue_bulk(jobs: int) -> float:
    """jobs/s of ``noop.delay_many`` in calls of 10,000 jobs."""
    schema = fresh_schema("fq")
    store = fq_use(schema)
    try:
        noop.delay(WARM_UP_ORG)
        started = time.perf_counter()
        for n, (org, count) in enumerate(split(jobs, max(1, jobs // BULK_CALL))):
            noop.delay_many(org if n else "org-0", [() for _ in range(count)])
        return jobs / (time.perf_counter() - started)
    finally:
        store.close()
        drop_schema(schema)


# ----- pgqueuer -----------------------------------------------------------------------


def pgq_environment(schema: str) -> None:
    """Points pgqueuer's settings (read from the environment, cached) at ``schema``."""
    from pgqueuer.domain.settings import db_settings

    os.environ["PGQUEUER_SCHEMA"] = schema
    db_settings.cache_clear()


async def pgq_queries(schema: str) -> tuple[Any, Any]:
    """An asyncpg connection and pgqueuer's queries over it, for ``schema``."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    pgq_environment(schema)
    conn = await asyncpg.connect(DSN)
    return conn, Queries(AsyncpgDriver(conn))


async def pgq_worker_main() -> None:
    """One pgqueuer worker process (``--pgqueuer-worker``): a no-op entrypoint, batches of 64."""
    from pgqueuer import QueueManager

    conn, queries = await pgq_queries(os.environ["PGQUEUER_SCHEMA"])
    qm = QueueManager(queries)

    @qm.entrypoint("noop")
    async def run_noop(job: Any) -> None:
        """Nothing, as fairqueue's noop."""

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    try:
        await qm.run(batch_size=SLOTS, dequeue_timeout=timedelta(seconds=5))
    finally:
        await conn.close()


def pgq_start_workers(schema: str, processes: int) -> list[subprocess.Popen[bytes]]:
    environment = {**os.environ, "PGQUEUER_SCHEMA": schema}
    return [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--pgqueuer-worker"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]


async def pgq_install(schema: str) -> None:
    conn, queries = await pgq_queries(schema)
    try:
        await queries.install()
    finally:
        await conn.close()


async def pgq_enqueue(schema: str, orgs: Sequence[tuple[str, int]], single: bool) -> float:
    """Enqueues ``count`` jobs per org, one call per job (``single``) or per 10,000; returns seconds taken."""
    conn, queries = await pgq_queries(schema)
    try:
        await queries.enqueue("noop", WARM_UP_ORG.encode())
        started = time.perf_counter()
        for org, count in orgs:
            payload = org.encode()
            if single:
                for _ in range(count):
                    await queries.enqueue("noop", payload)
            else:
                for start in range(0, count, BULK_CALL):
                    n = min(BULK_CALL, count - start)
                    await queries.enqueue(["noop"] * n, [payload] * n, [0] * n)
        return time.perf_counter() - started
    finally:
        await conn.close()


def pgq_unfinished(schema: str) -> bool:
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{schema}".pgqueuer)').fetchone()
    return bool(row and row[0])


def pgq_drain(jobs: int, orgs: int, processes: int) -> float:
    """jobs/s of ``processes`` pgqueuer workers draining ``jobs`` no-op jobs (``orgs`` only names payloads)."""
    schema = fresh_schema("pgq")
    asyncio.run(pgq_install(schema))
    workers = pgq_start_workers(schema, processes)
    try:
        # The warm-up job of pgq_enqueue runs first; its log rows are left out below.
        time.sleep(STARTUP)
        asyncio.run(pgq_enqueue(schema, split(jobs, orgs), single=False))
        wait_until_done(lambda: pgq_unfinished(schema))
        # The log is written in batches after the jobs end; wait until all are there.
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(DSN, autocommit=True) as conn:
                row = conn.execute(
                    f"SELECT COUNT(*) FILTER (WHERE status = 'successful'), "
                    f"MIN(created) FILTER (WHERE status = 'picked'), MAX(created) FILTER (WHERE status = 'successful'), "
                    f'MIN(job_id) FROM "{schema}".pgqueuer_log'
                ).fetchone()
            assert row is not None
            if row[0] >= jobs + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert row[0] == jobs + 1, f"pgqueuer completed {row[0]} of {jobs} jobs (and the warm-up)"
        with psycopg.connect(DSN, autocommit=True) as conn:
            # The first start of a drain job: the warm-up's (smallest id) rows left out.
            first = conn.execute(
                f"SELECT MIN(created) FROM \"{schema}\".pgqueuer_log WHERE status = 'picked' AND job_id > %s", (row[3],)
            ).fetchone()
        assert first is not None and first[0] is not None, "pgqueuer logged no 'picked' row"
        return jobs / (row[2] - first[0]).total_seconds()
    finally:
        stop(workers)
        drop_schema(schema)


def pgq_enqueue_single(calls: int) -> float:
    schema = fresh_schema("pgq")
    asyncio.run(pgq_install(schema))
    try:
        return calls / asyncio.run(pgq_enqueue(schema, [(f"org-{i % 100}", 1) for i in range(calls)], single=True))
    finally:
        drop_schema(schema)


def pgq_enqueue_bulk(jobs: int) -> float:
    schema = fresh_schema("pgq")
    asyncio.run(pgq_install(schema))
    try:
        return jobs / asyncio.run(pgq_enqueue(schema, split(jobs, max(1, jobs // BULK_CALL)), single=False))
    finally:
        drop_schema(schema)


# ----- where fairqueue's server time goes -------------------------------------------

# Statements EXPLAIN would change or that cost nothing to plan and run: locks are
# counted by the statements that wait for them, sequences must not move twice.
UNEXPLAINED = ("pg_advisory", "pg_notify", "setval")
UNEXPLAINED_KINDS = ("SAVEPOINT", "RELEASE", "ROLLBACK", "SET ", "LISTEN", "UNLISTEN")
# The enqueue's one statement takes a lock and draws numbers too, but it is the
# row write of the enqueue: explained (its rolled-back run only skips numbers).
EXPLAINED_ANYWAY = ("job_insert_published", "job_insert_counted")


@dataclass
class StatementCost:
    """What EXPLAIN (ANALYZE, BUFFERS, WAL) measured of one named statement, summed."""

    calls: int = 0
    planning_ms: float = 0.0
    execution_ms: float = 0.0
    wal_bytes: int = 0
    wal_records: int = 0
    dirtied: int = 0


def statement_costs(jobs: int, orgs: int) -> tuple[dict[str, StatementCost], int]:
    """Server time per named statement of the bulk enqueue of ``jobs`` no-op jobs over
    ``orgs`` orgs (calls of 10,000), then of one in-process worker (64 slots) draining them.

    Each statement the worker sends is first run under ``EXPLAIN (ANALYZE, BUFFERS,
    WAL)`` in a savepoint that is rolled back (outside a transaction, in one that
    is), then for real: the figures are its planning and execution on the server,
    without the round trip, the commit or the client. Returns the costs by statement
    name and the jobs drained."""
    schema = fresh_schema("fq")
    store = fq_use(schema)
    names = {text.strip(): name for name, text in store.db.sql.items()}
    costs: dict[str, StatementCost] = {}
    real_execute = psycopg.Cursor.execute

    def explained(cur: Any, query: Any, params: Any = None, **options: Any) -> Any:
        text = str(query).strip()
        name = names.get(text)
        plain = not any(w in text for w in UNEXPLAINED) and not text.startswith(UNEXPLAINED_KINDS)
        if name is not None and (plain or name in EXPLAINED_ANYWAY):
            conn = cur.connection
            idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            probe = conn.cursor()
            real_execute(probe, "BEGIN" if idle else "SAVEPOINT fq_explain")
            real_execute(probe, "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + text, params)
            plan = probe.fetchone()[0][0]
            real_execute(probe, "ROLLBACK" if idle else "ROLLBACK TO SAVEPOINT fq_explain")
            cost = costs.setdefault(name, StatementCost())
            cost.calls += 1
            cost.planning_ms += plan.get("Planning Time", 0.0)
            cost.execution_ms += plan["Execution Time"]
            top = plan["Plan"]
            cost.wal_bytes += top.get("WAL Bytes", 0)
            cost.wal_records += top.get("WAL Records", 0)
            cost.dirtied += top.get("Shared Dirtied Blocks", 0)
        return real_execute(cur, query, params, **options)

    try:
        psycopg.Cursor.execute = explained  # type: ignore[method-assign]
        for org, count in split(jobs, orgs):
            for start in range(0, count, BULK_CALL):
                noop.delay_many(org, [() for _ in range(min(BULK_CALL, count - start))])
        with app.worker(slots=SLOTS, conservation=None):
            wait_until_done(lambda: fq_unfinished(store))
    finally:
        psycopg.Cursor.execute = real_execute  # type: ignore[method-assign]
        store.close()
        drop_schema(schema)
    return costs, jobs


def print_statement_costs(jobs: int, orgs: int) -> None:
    costs, drained = statement_costs(jobs, orgs)
    print(f"\nserver time per job, bulk-enqueued and drained by one worker process, {drained:,} jobs over {orgs} orgs (EXPLAIN ANALYZE):")
    print("| statement | calls | planning µs/job | execution µs/job | WAL bytes/job | WAL records/job |")
    print("|---|---:|---:|---:|---:|---:|")
    total = StatementCost()
    for name, c in sorted(costs.items(), key=lambda item: -(item[1].planning_ms + item[1].execution_ms)):
        print(
            f"| {name} | {c.calls:,} | {c.planning_ms * 1000 / drained:.1f} | {c.execution_ms * 1000 / drained:.1f} | "
            f"{c.wal_bytes / drained:,.0f} | {c.wal_records / drained:.1f} |"
        )
        total.planning_ms += c.planning_ms
        total.execution_ms += c.execution_ms
        total.wal_bytes += c.wal_bytes
        total.wal_records += c.wal_records
    print(
        f"| all | | {total.planning_ms * 1000 / drained:.1f} | {total.execution_ms * 1000 / drained:.1f} | "
        f"{total.wal_bytes / drained:,.0f} | {total.wal_records / drained:.1f} |"
    )


# ----- shared -------------------------------------------------------------------------


def split(jobs: int, orgs: int) -> list[tuple[str, int]]:
    """``jobs`` over ``orgs`` orgs, as evenly as whole jobs allow: (org, count) pairs."""
    return [(f"org-{i}", jobs // orgs + (1 if i < jobs % orgs else 0)) for i in range(orgs)]


def fresh_schema(prefix: str) -> str:
    return f"{prefix}_bench_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def wait_until_done(unfinished: Callable[[], bool], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while unfinished():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not finish within {timeout} s")
        time.sleep(0.02)


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


MEASUREMENTS: dict[str, Callable[[int, int, int], float]] = {
    "fq-single": lambda jobs, orgs, processes: fq_enqueue_single(jobs),
    "fq-bulk": lambda jobs, orgs, processes: fq_enqueue_bulk(jobs),
    "fq-drain": fq_drain,
    "pgq-single": lambda jobs, orgs, processes: pgq_enqueue_single(jobs),
    "pgq-bulk": lambda jobs, orgs, processes: pgq_enqueue_bulk(jobs),
    "pgq-drain": pgq_drain,
}
"""Each measurement by name: (jobs, orgs, processes) -> jobs/s."""


def measure(name: str, jobs: int, orgs: int, processes: int, code: Path) -> float:
    """Runs one measurement in a process of its own whose ``fairqueue`` is the package
    under ``code`` (a directory holding ``fairqueue/``), as are its workers'."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code), str(HERE)])}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", name, "--jobs", str(jobs), "--orgs", str(orgs),
         "--processes", str(processes)],
        env=environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"measurement {name} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


@dataclass
class Row:
    """One row of the table: each side's rates per round, paired by round."""

    name: str
    rates: dict[str, list[float]] = field(default_factory=dict)

    def line(self, sides: Sequence[str]) -> str:
        reference = self.rates["pgqueuer"]
        cells = [" / ".join(f"{r:,.0f}" for r in self.rates[side]) for side in sides]
        ratios = []
        for side in sides[:-1]:
            per_round = [a / b for a, b in zip(self.rates[side], reference)]
            ratios.append(f"{' / '.join(f'{r:.2f}' for r in per_round)} (median {statistics.median(per_round):.2f}×)")
        return f"| {self.name} | {' | '.join(cells)} | {' | '.join(ratios)} |"


def run(
    rounds: int,
    jobs: int,
    single: int,
    bulk: int,
    processes: Sequence[int],
    org_counts: Sequence[int],
    codes: dict[str, Path],
) -> list[Row]:
    """The whole comparison: ``rounds`` rounds; in each, every row's sides run back
    to back (fairqueue under each of ``codes``, then pgqueuer), their order reversed
    every other round so that a slow spell of the machine falls on no side always."""
    cases: list[tuple[str, str, int, int, int]] = [
        (f"enqueue, single ({single:,} calls)", "single", single, 1, 1),
        (f"enqueue, bulk ({bulk:,} jobs, calls of {BULK_CALL:,})", "bulk", bulk, 1, 1),
    ]
    for orgs in org_counts:
        for n in processes:
            cases.append((f"drain {jobs:,}, {orgs} org{'s' if orgs > 1 else ''}, {n} process{'es' if n > 1 else ''}",
                          "drain", jobs, orgs, n))  # fmt: skip
    sides = [*codes, "pgqueuer"]
    rows = [Row(name, {side: [] for side in sides}) for name, *_ in cases]
    for r in range(rounds):
        for row, (_, what, n_jobs, orgs, n) in zip(rows, cases):
            for side in sides if r % 2 == 0 else sides[::-1]:
                if side == "pgqueuer":
                    rate = measure(f"pgq-{what}", n_jobs, orgs, n, HERE.parent / "python")
                else:
                    rate = measure(f"fq-{what}", n_jobs, orgs, n, codes[side])
                row.rates[side].append(rate)
            figures = ", ".join(f"{side} {row.rates[side][-1]:,.0f}" for side in sides)
            print(f"round {r + 1} {row.name}: {figures} jobs/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    parser.add_argument("--single", type=int, default=2_000, help="calls of the single-enqueue row")
    parser.add_argument("--bulk", type=int, default=20_000, help="jobs of the bulk-enqueue row")
    parser.add_argument("--processes", default="1,2,4", help="worker processes of the drain rows")
    parser.add_argument("--orgs", default="1,100", help="orgs of the drain rows")
    parser.add_argument("--statement-costs", action="store_true", help="only fairqueue's server time per statement")
    parser.add_argument(
        "--baseline",
        help="a directory holding another fairqueue package (e.g. the commit before a change), "
        "measured in every row beside this checkout's for an A/B in the same run",
    )
    parser.add_argument("--one", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    parser.add_argument("--pgqueuer-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pgqueuer_worker:
        asyncio.run(pgq_worker_main())
        return
    if args.statement_costs:
        for orgs in [int(o) for o in args.orgs.split(",")]:
            print_statement_costs(args.jobs, orgs)
        return
    if args.one:
        print(MEASUREMENTS[args.one](args.jobs, int(args.orgs), int(args.processes)))
        return
    import pgqueuer

    # An empty list (--processes "") leaves the drain rows out.
    processes = [int(p) for p in args.processes.split(",") if p]
    org_counts = [int(o) for o in args.orgs.split(",") if o]
    codes = {"fairqueue": HERE.parent / "python"}
    if args.baseline:
        codes = {"baseline": Path(args.baseline).resolve(), **codes}
    print(f"{' and '.join(f'{side} ({code})' for side, code in codes.items())} against pgqueuer "
          f"{pgqueuer.__version__}, {args.rounds} rounds", flush=True)  # fmt: skip
    rows = run(args.rounds, args.jobs, args.single, args.bulk, processes, org_counts, codes)
    sides = [*codes, "pgqueuer"]
    print(f"\n| row | {' | '.join(f'{side} jobs/s (rounds)' for side in sides)} | "
          f"{' | '.join(f'{side} / pgqueuer' for side in sides[:-1])} |")  # fmt: skip
    print("|---|" + "---:|" * (2 * len(sides) - 1))
    for row in rows:
        print(row.line(sides))
