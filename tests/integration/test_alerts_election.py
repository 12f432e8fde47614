"""The wait alerts are evaluated by one worker of the fleet: the live registered worker
whose name sorts first, read from a real SQLite store's registry (one name registered
by a real process that is then SIGKILLed, two by this one); the others skip the
per-org reads. The evaluator also looks at the orgs whose jobs other workers run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_until
from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.limits import Limits
from fairqueue.records import NewJob, WorkerInfo
from fairqueue.runtime.core import build_dispatcher
from fairqueue.runtime.duties.alert_evaluation import AlertEvaluation
from fairqueue.runtime.duties.history_sampling import HistorySampling
from fairqueue.settings import QueueSettings
from fairqueue.storage.sqlite import SQLiteStorage

SETTINGS = QueueSettings("fair_share", Limits(slots=4, cap=4))

REGISTERED_WORKER = """
import os, sys, time
from fairqueue.records import WorkerInfo
from fairqueue.storage import open_storage
store = open_storage(sys.argv[1])
store.worker_register(WorkerInfo(sys.argv[2], "elsewhere", os.getpid(), "thread", 2, time.time()), time.time())
print("registered", flush=True)
time.sleep(600)
"""


def test_only_the_first_live_worker_evaluates_and_the_next_takes_over_when_it_dies_or_leaves(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    store = SQLiteStorage(path)
    first = subprocess.Popen([sys.executable, "-c", REGISTERED_WORKER, str(path), "w-a"], stdout=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == b"registered"
        now = time.time()
        duties: dict[str, AlertEvaluation] = {}
        heard: dict[str, list[AlertEvent]] = {}
        for name in ("w-b", "w-c"):
            store.worker_register(WorkerInfo(name, "here", os.getpid(), "thread", 2, now), now)
            alerts = Alerts(lambda: store, SETTINGS)
            alerts.configure(wait_threshold=10.0)
            heard[name] = []
            alerts.subscribe(heard[name].append)
            core = build_dispatcher(SETTINGS, 4, virtual_time=now)
            duties[name] = AlertEvaluation(alerts, core, HistorySampling(store, every=1.0), every=1.0, worker=name)
        # Another worker runs a job of acme that waited 100 s: none of these two started it.
        [job_id] = store.job_enqueue([NewJob("acme", "future", "fq_sample_jobs:noop", "[]")], now - 100)
        assert store.job_claim([job_id], "w-a", now + 600, now)

        def run_all() -> dict[str, int]:
            for duty in duties.values():
                duty.run(time.time())
            return {name: duty.evaluated for name, duty in duties.items()}

        assert run_all() == {"w-b": 0, "w-c": 0}, "w-a sorts first and is alive: it evaluates, not these"
        first.kill()
        first.wait(30)
        wait_until(lambda: [(w.info.name, w.alive) for w in store.worker_list()][0] == ("w-a", False), what="w-a's death")
        assert run_all() == {"w-b": 1, "w-c": 0}
        assert [(e.kind, e.state, e.org) for e in heard["w-b"]] == [("wait_observed", "start", "acme")]
        assert heard["w-c"] == []
        store.worker_leave("w-b")
        assert run_all() == {"w-b": 1, "w-c": 1}
        assert heard["w-c"] == [], "the episode is open in the store already: not sent twice"
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(30)
        assert first.stdout is not None
        first.stdout.close()
        store.close()
