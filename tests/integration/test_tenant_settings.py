"""Tenant settings that live in the store, applied by real worker processes on both
shared stores (SQLite, PostgreSQL): a lowered cap is never exceeded by a job that
starts after the change commits, a raised one is used at once, workers with
different code-level limits enforce the same stored cap, pause and resume stop and
restart starts with nothing lost, a tier change reaches every org of the tier, and
the settings outlive every worker.

The counts are sampled continuously from a connection of the test's own, apart
from every worker's.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_crash import SUPPORT

import fairqueue as fq
from fairqueue.storage import open_storage

JOBS = 240
SECONDS = 0.2  # each job's run time
DEADLINE = 60.0  # generous: a loaded machine may start processes slowly


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = str(tmp_path / "fq.db")
    else:
        url = f"{request.getfixturevalue('pg_dsn')}?schema={request.getfixturevalue('pg_schema')}"
    open_storage(url).close()  # the schema exists before any worker starts
    yield url


class Sampler:
    """Reads each org's processing count over and over from a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> tuple[Callable[[], dict[str, int]], Callable[[], None]]:
        """A query of every org's processing count, and the close of its connection."""
        sql = "SELECT org, COUNT(*) FROM {t} WHERE status = 'processing' GROUP BY org"
        if "://" in self.url:
            import psycopg

            dsn, _, schema = self.url.partition("?schema=")
            conn = psycopg.connect(dsn, autocommit=True)
            table = f'"{schema}".fq_jobs'
            return lambda: dict(conn.execute(sql.format(t=table)).fetchall()), conn.close  # type: ignore[arg-type]
        db = sqlite3.connect(self.url, timeout=30)
        return lambda: dict(db.execute(sql.format(t="fq_jobs")).fetchall()), db.close

    def _run(self) -> None:
        query, close = self._connect()
        try:
            while not self._stop.is_set():
                self.samples.append((time.time(), query()))
                time.sleep(0.003)
        finally:
            close()

    def since(self, t: float) -> list[dict[str, int]]:
        return [counts for at, counts in list(self.samples) if at >= t]

    def wait(self, what: str, condition: Callable[[dict[str, int]], bool], after: float) -> float:
        """Waits until a sample taken after ``after`` meets ``condition``; returns its time."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            for at, counts in list(self.samples):
                if at >= after and condition(counts):
                    return at
            time.sleep(0.01)
        raise AssertionError(f"timed out waiting for {what}; last samples {self.samples[-3:]}")

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def workers(url: str, caps: list[Any], slots: int = 6) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes of the sample app, each with its own code-level cap ("none": the policy's default)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", str(slots)],
            env={**os.environ, "FQ_STORE": url, "FQ_CAP": str(cap),
                 "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        for cap in caps
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=DEADLINE) == 0, "a worker stopped by SIGTERM exits 0"


def drains_down_to(samples: list[dict[str, int]], org: str, cap: int) -> None:
    """After a cap change: a count above the cap never grows, and once at or below it never exceeds it."""
    previous = None
    for counts in samples:
        n = counts.get(org, 0)
        if previous is not None:
            assert n <= max(cap, previous), f"{org} went from {previous} to {n} running under a cap of {cap}"
        previous = n


@contextmanager
def app_on(url: str) -> Iterator[fq.FairQueue]:
    import fq_sample_jobs as sample

    original = sample.app.storage
    sample.app.storage = open_storage(url)
    sample.app.settings.forget()
    try:
        yield sample.app
    finally:
        sample.app.storage.close()
        sample.app.storage = original
        sample.app.settings.forget()


def completed(url: str) -> dict[str, int]:
    with closing(open_storage(url)) as store:
        counts: dict[str, int] = {}
        for (_, _, status), n in store.job_counts().items():
            counts[status.value] = counts.get(status.value, 0) + n
        return counts


def test_stored_caps_apply_to_every_worker_at_once_and_pause_stops_starts(store_url: str) -> None:
    import fq_sample_jobs as sample

    with app_on(store_url) as app, Sampler(store_url) as sampler:
        app.set_limits("acme", "future", cap=4)
        sample.spin.delay_many("acme", [(SECONDS,)] * JOBS)
        # One worker whose code says cap 2 follows the stored 4.
        with workers(store_url, caps=[2]):
            sampler.wait("the code-cap-2 worker running 4", lambda c: c.get("acme", 0) == 4, 0.0)
            with workers(store_url, caps=[12, 12, 12]):
                began = time.time()
                time.sleep(1.0)  # three more workers whose code says 12
                assert max(c.get("acme", 0) for c in sampler.since(began)) <= 4

                app.set_limits("acme", "future", cap=2)
                lowered = time.time()
                sampler.wait("acme down to its lowered cap", lambda c: c.get("acme", 0) <= 2, lowered)
                time.sleep(1.0)
                drains_down_to(sampler.since(lowered), "acme", 2)

                app.set_limits("acme", "future", cap=7)
                raised = time.time()
                used = sampler.wait("acme using its raised cap", lambda c: c.get("acme", 0) == 7, raised)
                print(f"raised cap used {used - raised:.2f} s after the change committed")
                assert max(c.get("acme", 0) for c in sampler.since(raised)) <= 7

                app.pause("acme", by="test")
                paused = time.time()
                time.sleep(1.5)
                with closing(open_storage(store_url)) as store:
                    starts = [r.started_at for r in store.job_list(org="acme", limit=JOBS) if r.started_at]
                late = [t for t in starts if t > paused + 1.0]
                assert late == [], f"{len(late)} jobs started more than 1 s after the pause committed"
                sampler.wait("acme's running jobs to finish under the pause", lambda c: c.get("acme", 0) == 0, paused)
                explained = app.explain(next(r.id for r in app.jobs(org="acme", status="queued", limit=1)))
                assert "paused" in explained.render() and "test" in explained.render()

                app.resume("acme")
                resumed = time.time()
                sampler.wait("acme running again after the resume", lambda c: c.get("acme", 0) > 0, resumed)
        # Every worker stopped; the stored cap outlives them all.
        assert app.settings.fresh().cap("acme", "future") == 7
        with workers(store_url, caps=[12, 12]):
            restarted = time.time()
            sampler.wait("the fresh workers at the stored cap", lambda c: c.get("acme", 0) == 7, restarted)
            deadline = time.monotonic() + DEADLINE * 3
            while completed(store_url).get("completed", 0) < JOBS and time.monotonic() < deadline:
                time.sleep(0.2)
            assert max(c.get("acme", 0) for c in sampler.since(restarted)) <= 7
    assert completed(store_url) == {"completed": JOBS}, "nothing lost, nothing failed, through the pause and restarts"


def test_a_tier_change_applies_to_every_org_of_the_tier(store_url: str) -> None:
    import fq_sample_jobs as sample

    orgs = ["t1", "t2", "t3"]
    with app_on(store_url) as app, Sampler(store_url) as sampler:
        app.set_tier("small", "future", cap=1)
        for org in orgs:
            app.assign_tier(org, "small")
            sample.spin.delay_many(org, [(SECONDS,)] * 40)
        sample.spin.delay_many("other", [(SECONDS,)] * 40)  # the default tier: the code's cap
        with workers(store_url, caps=[12, 12]):
            sampler.wait("every small org running", lambda c: all(c.get(o, 0) == 1 for o in orgs), 0.0)
            started = time.time()
            time.sleep(1.0)
            assert all(c.get(o, 0) <= 1 for c in sampler.since(0.0) for o in orgs)
            assert max(c.get("other", 0) for c in sampler.since(started)) > 1
            app.set_tier("small", "future", cap=2)
            changed = time.time()
            sampler.wait("every small org at the tier's new cap", lambda c: all(c.get(o, 0) == 2 for o in orgs), changed)
            assert all(c.get(o, 0) <= 2 for c in sampler.since(changed) for o in orgs)
            listed = {entry["org"]: entry for entry in app.tenants.list()}
            assert listed["t1"]["kinds"]["future"]["cap"] == {"value": 2, "source": "tier:small"}


def list_json(url: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "fairqueue", "tenants", "list", "--store", url, "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    return json.loads(out.stdout)


def test_the_cli_sets_and_lists_settings_with_their_sources(store_url: str) -> None:
    cli = [sys.executable, "-m", "fairqueue", "tenants"]
    run = lambda *args: subprocess.run([*cli, *args, "--store", store_url], capture_output=True, text=True)  # noqa: E731
    assert run("tier", "premium", "--cap", "24", "--weight", "2").returncode == 0
    assert run("set", "acme", "--tier", "premium", "--per-key-cap", "2", "--rate", "10/s").returncode == 0
    assert run("set", "acme", "--kind", "batch", "--cap", "1").returncode == 0
    assert run("pause", "acme", "--key", "user-42", "--by", "ops").returncode == 0
    bad = run("set", "acme", "--cap", "-1")
    assert bad.returncode == 2 and "invalid cap -1 for org 'acme'" in bad.stderr
    [acme] = list_json(store_url)["orgs"]
    settings = acme["settings"]
    assert settings["cap"] == {"value": 24, "source": "tier:premium"}
    assert settings["weight"] == {"value": 2.0, "source": "tier:premium"}
    assert settings["per_key_cap"] == {"value": 2, "source": "org"}
    assert settings["rate"]["value"] == {"rate": 10.0, "per": 1.0, "burst": 10}
    assert settings["daily_limit"]["source"] == "code"
    assert acme["kinds"]["batch"]["cap"] == {"value": 1, "source": "kind"}
    assert acme["kinds"]["future"]["cap"]["source"] == "code"
    assert acme["paused_keys"]["user-42"]["by"] == "ops"


def test_test_mode_runs_with_the_settings_the_app_has_loaded(tmp_path: Path) -> None:
    import fq_sample_jobs as sample

    with app_on(str(tmp_path / "fq.db")) as app:
        app.set_limits("acme", daily_limit=2)
        app.pause("paused-org")
        with app.testing() as run:
            sample.record.delay("acme", "a")
            sample.record.delay("acme", "b")
            with pytest.raises(fq.DailyLimitExceeded):
                sample.record.delay("acme", "c")
            sample.record.delay("paused-org", "d")
        assert sorted(r.status.value for r in run.jobs()) == ["completed", "completed", "queued"]
        assert app.settings.fresh().daily_limit("acme") == 2, "the app's own store again after the block"


def test_one_tenant_uses_every_slot_of_every_worker_under_fair_share(store_url: str) -> None:
    # fair_share's default cap is none (shares decide): a single tenant adding workers gets them.
    import fq_sample_jobs as sample

    with app_on(store_url), Sampler(store_url) as sampler:
        assert fq.Limits().cap is None and fq.FairQueue(":memory:").cap_of("solo", "future") is None
        sample.spin.delay_many("solo", [(0.5,)] * 60)
        with workers(store_url, caps=["none", "none"], slots=3):
            sampler.wait("one org running on all 6 slots of 2 workers", lambda c: c.get("solo", 0) == 6, 0.0)
