"""One tenant, more workers: does its drain grow with worker processes?

    python benches/one_tenant_scaling.py --store sqlite --jobs 3000 --rounds 2
    python benches/one_tenant_scaling.py --store postgres --jobs 3000 --rounds 2

Every job belongs to one org and sleeps ``--sleep`` ms (so the workers' slots, not
the store or the CPU, bound the rate); ``1``, ``2`` and ``4`` ``fairqueue worker``
processes of ``--slots`` slots each drain ``--jobs`` of them, round by round in
alternating order, on a fresh store each time (a SQLite file, or a schema of its own
on the PostgreSQL server of ``--dsn``). The drain rate is jobs completed per second
from the first start to the last finish, read from the store. Each row is run with
the default cap (fair_share: none) and with the reference's 12 per org (the default
before #19), which bounds a lone tenant to 12 running jobs whatever the workers.

Prints each run and the ratio of 2 and 4 processes to 1 within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = ROOT / "tests" / "support"


def run_once(store: str, dsn: str, processes: int, slots: int, jobs: int, sleep_ms: float, cap: str) -> float:
    """Drains ``jobs`` one-org jobs with ``processes`` workers; returns jobs/s."""
    sys.path.insert(0, str(SUPPORT))
    import fq_sample_jobs as sample
    from fairqueue.storage import open_storage

    with tempfile.TemporaryDirectory() as tmp:
        schema = f"fq_scale_{uuid.uuid4().hex[:8]}"
        url = str(Path(tmp) / "fq.db") if store == "sqlite" else f"{dsn}?schema={schema}"
        storage = open_storage(url)
        original, sample.app.storage = sample.app.storage, storage
        try:
            sample.spin.delay_many("solo", [(sleep_ms / 1000,)] * jobs)
        finally:
            sample.app.storage = original
        env = {**os.environ, "FQ_STORE": url, "FQ_CAP": cap, "FQ_SLOTS": str(slots),
               "PYTHONPATH": os.pathsep.join([str(SUPPORT), str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        workers = [
            subprocess.Popen([sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", str(slots),
                              "--no-conservation"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            for _ in range(processes)
        ]
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                counts = storage.job_counts(live=True)
                if not any(n for (_, _, status), n in counts.items()):
                    break
                time.sleep(0.2)
            records = storage.job_list(org="solo", limit=jobs)
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=60)
            if store == "postgres":
                import psycopg

                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            storage.close()
    done = [r for r in records if r.status.value == "completed" and r.started_at and r.finished_at]
    if len(done) != jobs:
        raise SystemExit(f"only {len(done)} of {jobs} jobs completed")
    first = min(r.started_at for r in done if r.started_at is not None)
    last = max(r.finished_at for r in done if r.finished_at is not None)
    return jobs / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=20.0, help="Milliseconds each job sleeps.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        order = [1, 2, 4] if round_number % 2 == 0 else [4, 2, 1]
        for cap in ("none", "12"):
            rates = {n: run_once(args.store, args.dsn, n, args.slots, args.jobs, args.sleep, cap) for n in order}
            row = {"round": round_number, "cap": cap, "rates": rates,
                   "x2": rates[2] / rates[1], "x4": rates[4] / rates[1]}  # fmt: skip
            results.append(row)
            if not args.json:
                print(f"round {round_number} cap {cap:>4}: " + ", ".join(f"{n} proc {r:,.0f}/s" for n, r in sorted(rates.items()))
                      + f"; x{row['x2']:.2f} at 2, x{row['x4']:.2f} at 4", flush=True)  # fmt: skip
    summary = {cap: {"x2": statistics.median(r["x2"] for r in results if r["cap"] == cap),
                     "x4": statistics.median(r["x4"] for r in results if r["cap"] == cap)} for cap in ("none", "12")}  # fmt: skip
    if args.json:
        print(json.dumps({"runs": results, "median": summary}, indent=2))
    else:
        for cap, ratios in summary.items():
            print(f"median, cap {cap}: x{ratios['x2']:.2f} at 2 processes, x{ratios['x4']:.2f} at 4")


if __name__ == "__main__":
    main()
