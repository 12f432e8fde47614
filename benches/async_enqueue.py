"""What the async client costs per enqueue: ``fn.delay`` against ``await fn.delay_async``
one after another on one event loop, per store, alternating sync and async rounds,
and the bare thread hop (``asyncio.to_thread`` of a function that does nothing).

    PYTHONPATH=python:tests/support python benches/async_enqueue.py [--jobs 2000] [--rounds 3] [--postgres DSN]

Prints the median µs per enqueue of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import fq_sample_jobs as sample
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


def per_call_us(total: float, n: int) -> float:
    return total / n * 1e6


def sync_round(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        sample.record.delay(f"org-{i % 10}", "x")
    return per_call_us(time.perf_counter() - started, n)


async def async_round(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await sample.record.delay_async(f"org-{i % 10}", "x")
    return per_call_us(time.perf_counter() - started, n)


async def hop_round(n: int) -> float:
    def nothing() -> None:
        pass

    started = time.perf_counter()
    for _ in range(n):
        await asyncio.to_thread(nothing)
    return per_call_us(time.perf_counter() - started, n)


def measure(name: str, store: Storage, jobs: int, rounds: int) -> None:
    sample.app.storage = store
    sync, awaited = [], []

    async def async_rounds() -> list[float]:
        return [await async_round(jobs)]

    for _ in range(rounds):
        sync.append(sync_round(jobs))
        awaited += asyncio.run(async_rounds())
    print(f"{name:10} delay {statistics.median(sync):8.1f} µs   delay_async {statistics.median(awaited):8.1f} µs   "
          f"(rounds: {[round(x) for x in sync]} / {[round(x) for x in awaited]})")  # fmt: skip
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default=None, help="a DSN: also measure the PostgreSQL store (a fresh schema)")
    args = parser.parse_args()
    hops = [asyncio.run(hop_round(args.jobs)) for _ in range(args.rounds)]
    print(f"bare thread hop (asyncio.to_thread of a no-op): {statistics.median(hops):.1f} µs  {[round(x) for x in hops]}")
    measure("memory", MemoryStorage(), args.jobs, args.rounds)
    with tempfile.TemporaryDirectory() as folder:
        measure("sqlite", SQLiteStorage(Path(folder) / "fq.db"), args.jobs, args.rounds)
    if args.postgres:
        import psycopg

        from fairqueue.storage.postgres import PostgresStorage

        schema = f"fq_bench_{uuid.uuid4().hex[:8]}"
        store: Any = PostgresStorage(args.postgres, schema=schema)
        try:
            measure("postgres", store, args.jobs, args.rounds)
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
