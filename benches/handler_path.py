"""The per-job Python of a worker's handler path (#19), for two source trees A/B.

Two measurements, each in a fresh interpreter importing ``fairqueue`` from the tree
under test, the two trees alternating (the order flipped each round):

* ``runner``: ``Runner.execute`` of one stored no-op future, run 100,000 times on
  one thread (no worker, no store I/O): µs per job.
* ``drain``: one in-process worker of ``--slots`` thread slots drains ``--jobs``
  queued futures (``noop``, or ``spin(0.001)``: a 1 ms sleep) over 4 orgs from a
  fresh store: jobs/s from its start to its last completion, and the process's CPU
  time (all threads, user and system) over that span per job.

    PYTHONPATH=python:tests/support python benches/handler_path.py --base /tmp/base/python \\
        [--head python] [--measure drain|runner] [--store sqlite|memory] [--slots 64] \\
        [--jobs 40000] [--handler noop|sleep] [--rounds 4]

``--base`` and ``--head`` are ``python/`` directories (a ``git archive`` of a commit
with the built ``_core.abi3.so`` copied in). Prints each round and the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUPPORT = Path(__file__).resolve().parents[1] / "tests" / "support"


def runner_us(n: int = 100_000) -> float:
    """µs per ``Runner.execute`` of a stored no-op future."""
    import fq_sample_jobs as sample
    from fairqueue.runtime.runner import Runner
    from fairqueue.storage.memory import MemoryStorage

    sample.app.storage = MemoryStorage()
    record = sample.app.storage.job_get(sample.noop.delay("org-1").id)
    assert record is not None
    runner = Runner(sample.app)
    started = time.perf_counter()
    for _ in range(n):
        runner.execute(record)
    return (time.perf_counter() - started) / n * 1e6


def drain_rate(store_kind: str, slots: int, jobs: int, handler: str) -> tuple[float, float]:
    """Jobs/s of one in-process worker draining ``jobs`` queued futures, and CPU µs per job."""
    import fq_sample_jobs as sample
    from fairqueue.storage.memory import MemoryStorage
    from fairqueue.storage.sqlite import SQLiteStorage

    directory = tempfile.mkdtemp()
    sample.app.storage = MemoryStorage() if store_kind == "memory" else SQLiteStorage(os.path.join(directory, "fq.db"))
    fn, call = (sample.noop, ()) if handler == "noop" else (sample.spin, (0.001,))
    for i in range(0, jobs, 100):
        fn.delay_many(f"org-{(i // 100) % 4}", [call for _ in range(100)])
    worker = sample.app.worker(slots=slots)
    started, cpu = time.perf_counter(), time.process_time()
    worker.start()
    while worker.completed < jobs:
        time.sleep(0.002)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    worker.stop()
    return jobs / elapsed, cpu / jobs * 1e6


def measure_in(tree: str, args: argparse.Namespace) -> tuple[float, ...]:
    """One measurement in a fresh interpreter importing fairqueue from ``tree``."""
    command = [sys.executable, __file__, "--child", "--measure", args.measure, "--store", args.store,
               "--slots", str(args.slots), "--jobs", str(args.jobs), "--handler", args.handler]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, str(SUPPORT)])}
    out = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
    return tuple(float(word) for word in out.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="the baseline tree's python/ directory")
    parser.add_argument("--head", default=str(Path(__file__).resolve().parents[1] / "python"))
    parser.add_argument("--measure", choices=("drain", "runner"), default="drain")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--handler", choices=("noop", "sleep"), default="noop")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        values = (runner_us(),) if args.measure == "runner" else drain_rate(args.store, args.slots, args.jobs, args.handler)
        print(" ".join(f"{value:.3f}" for value in values))
        return
    if args.base is None:
        parser.error("--base is required")
    units = ("µs/job",) if args.measure == "runner" else ("jobs/s", "CPU µs/job")
    what = "Runner.execute" if args.measure == "runner" else f"{args.store} {args.slots} slots {args.jobs} {args.handler}"
    print(f"{what}: base {args.base}, head {args.head}")
    base: list[tuple[float, ...]] = []
    head: list[tuple[float, ...]] = []
    for round_ in range(args.rounds):
        # The order flips each round, so neither tree always runs on a machine the other just warmed.
        for tree, values in ((args.base, base), (args.head, head))[:: 1 if round_ % 2 == 0 else -1]:
            values.append(measure_in(tree, args))
        print(f"round {round_ + 1}: " + compared(units, base[-1], head[-1]))
    medians = [tuple(statistics.median(m[i] for m in side) for i in range(len(units))) for side in (base, head)]
    print("median:  " + compared(units, *medians))


def compared(units: tuple[str, ...], base: tuple[float, ...], head: tuple[float, ...]) -> str:
    return "   ".join(f"{unit} base {b:,.2f} head {h:,.2f} head/base {h / b:.2f}" for unit, b, h in zip(units, base, head))


if __name__ == "__main__":
    main()
