"""Caps, rate limits and settings versions held across hosts by the PostgreSQL store.

Several claimers, each with a store (and connections) of its own, claim at once
from one schema, as workers on different hosts would; a separate connection
watches what is processing. What is checked is what a claim promises
(:meth:`Storage.job_claim`): a cap at any level is never exceeded at any instant,
a rate limit of R per second with burst B never admits more than R·t + B units
over any window t, and a claim built from settings older than the store's claims
nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional

import pytest

from fairqueue.records import Admission, Finish, JobStatus, NewJob, Rate, SettingChange

DEADLINE = 120.0  # seconds any phase may take on a busy 2-core machine


def job(org: str = "o", kind: str = "a", key: Optional[str] = None, cost: int = 1) -> NewJob:
    return NewJob(org=org, kind=kind, handler="app.jobs:run", payload="[]", key=key, cost=cost)


@pytest.fixture
def pg(pg_dsn: str) -> Any:
    """The psycopg module (imported only once the server is known to be usable)."""
    import psycopg

    return psycopg


@pytest.fixture
def hosts(pg_dsn: str, pg_schema: str) -> Iterator[list[Any]]:
    """Five stores on one schema: the first sets up and watches, the others claim."""
    from fairqueue.storage.postgres import PostgresStorage

    opened = [PostgresStorage(pg_dsn, schema=pg_schema, pool_size=2) for _ in range(5)]
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


class Threads:
    """Threads that run until told to stop; the first error any of them meets fails the test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def start(self, body: Callable[[], None]) -> None:
        def run() -> None:
            try:
                body()
            except BaseException as e:  # reported by the main thread
                self.errors.append(e)
                self.stop.set()

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE)
        assert not self.errors, self.errors


def wait_until(predicate: Callable[[], bool], threads: Threads, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert not threads.errors, threads.errors
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.02)


def processing_by_key(conn: Any, schema: str, org: str) -> dict[Optional[str], int]:
    """The jobs of ``org`` processing now, per key, from one snapshot."""
    rows = conn.execute(
        f'SELECT key, count(*) FROM "{schema}".fq_jobs WHERE status = %s AND org = %s GROUP BY key', ("processing", org)
    ).fetchall()
    return {key: int(n) for key, n in rows}


def claimer(store: Any, name: str, admission: Callable[[], Admission], hold: float, threads: Threads) -> Callable[[], None]:
    """A worker's loop: finish what it holds (after ``hold`` seconds) and claim more in
    one turn, asking for a few of the queued jobs at random."""
    rng = random.Random(name)

    def run() -> None:
        held: list[int] = []
        while not threads.stop.is_set():
            pending = [p.id for p in store.job_pending(limit=64)]
            now = time.time()
            finishes = [Finish(i, name, JobStatus.COMPLETED, now) for i in held]
            asked = rng.sample(pending, min(3, len(pending)))
            _, claimed = store.job_finish_and_claim(finishes, asked, name, now + 60, now, admission())
            held = [r.id for r in claimed]
            time.sleep(hold * rng.random() if held else 0.005)
        if held:
            store.job_finish([Finish(i, name, JobStatus.COMPLETED, time.time()) for i in held])

    return run


class StoredSettings:
    """What a claimer's admission is built from: the stored settings (an org cap),
    read again when a claim comes back stale."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.stale = 0
        self.read()

    def read(self) -> None:
        version, rows = self.store.settings_read()
        [row] = [r for r in rows if (r.scope, r.name) == ("org", "o")]
        self.admission = Admission(version=version, org_caps={"o": int(row.values["cap"])})


def test_org_and_key_caps_are_never_exceeded_by_claimers_on_many_hosts(
    pg: Any, pg_dsn: str, pg_schema: str, hosts: list[Any]
) -> None:
    watcher, *claimers = hosts
    keys = ["k1", "k2", None]
    ids = watcher.job_enqueue([job(kind=random.choice("ab"), key=keys[i % 3]) for i in range(240)], time.time())
    watcher.job_enqueue([job(org="other") for _ in range(30)], time.time())  # an uncapped org in the same claims
    admission = Admission(org_caps={"o": 3}, key_caps={("o", "k1"): 2, ("o", "k2"): 2})
    threads = Threads()
    samples: list[dict[Optional[str], int]] = []

    def sample() -> None:
        with pg.connect(pg_dsn, autocommit=True) as conn:
            while not threads.stop.is_set():
                samples.append(processing_by_key(conn, pg_schema, "o"))

    threads.start(sample)
    for n, store in enumerate(claimers):
        threads.start(claimer(store, f"host-{n}", lambda: admission, 0.02, threads))

    def all_done() -> bool:
        return all(r.status is JobStatus.COMPLETED for r in watcher.job_list(org="o", limit=1000))

    wait_until(all_done, threads, "every capped job completed")
    threads.join()
    assert len(samples) > 50, "the watcher sampled too rarely to show anything"
    worst_org = max(sum(s.values()) for s in samples)
    worst_key = {key: max(s.get(key, 0) for s in samples) for key in ("k1", "k2")}
    assert worst_org <= 3 and all(n <= 2 for n in worst_key.values()), (worst_org, worst_key)
    assert worst_org == 3, "four claimers should have filled the org's cap at some instant"
    records = watcher.job_list(org="o", limit=1000)
    assert sorted(r.id for r in records) == sorted(ids) and all(r.attempts == 1 for r in records)


def test_a_rate_limit_holds_over_every_window_and_is_reached_across_hosts(hosts: list[Any]) -> None:
    watcher, *claimers = hosts
    rate = Rate(rate=50, per=1.0, burst=5)
    # More demand than the rate: 4 s at 50 units/s is 200 units; some jobs cost 2.
    watcher.job_enqueue([job(key=f"u{i % 7}", cost=1 + (i % 5 == 0)) for i in range(600)], time.time())
    admission = Admission(rates={("o", "org", ""): rate})
    threads = Threads()
    admitted: list[tuple[float, int]] = []  # (the claim's now, cost) of every job claimed
    lock = threading.Lock()

    def claim_loop(store: Any, name: str) -> Callable[[], None]:
        rng = random.Random(name)

        def run() -> None:
            order = [p.id for p in store.job_pending()]
            rng.shuffle(order)
            while not threads.stop.is_set() and order:
                now = time.time()
                asked, order = order[:4], order[4:]
                claimed = store.job_claim(asked, name, now + 60, now, admission)
                with lock:
                    admitted.extend((now, r.cost) for r in claimed)
                left = [i for i in asked if i in claimed.rate_limited or i in claimed.at_cap]
                order = left + order
                if claimed.rate_limited:  # wait for room, as a worker would
                    time.sleep(max(0.0, min(claimed.rate_limited.values()) - time.time()))

        return run

    for n, store in enumerate(claimers):
        threads.start(claim_loop(store, f"host-{n}"))
    wait_until(lambda: bool(admitted) and time.time() - min(a for a, _ in admitted) > 4.0, threads, "4 s of claims")
    threads.join()
    admitted.sort()
    times = [t for t, _ in admitted]
    # Over every window [times[i], times[j]] the units admitted fit the rate and burst.
    prefix = [0]
    for _, cost in admitted:
        prefix.append(prefix[-1] + cost)
    worst = max(
        prefix[j + 1] - prefix[i] - rate.rate * (times[j] - times[i]) for i in range(len(times)) for j in range(i, len(times))
    )
    assert worst <= rate.burst + 1e-6, f"a window admitted {worst:.3f} units more than rate x t (burst {rate.burst})"
    span = times[-1] - times[0]
    reached = (prefix[-1] - rate.burst) / span
    assert reached >= 0.95 * rate.rate, f"{reached:.1f} units/s over {span:.1f} s, short of {rate.rate}"


def test_a_settings_change_makes_older_claims_stale_and_later_ones_apply_it(
    pg: Any, pg_dsn: str, pg_schema: str, hosts: list[Any]
) -> None:
    watcher, *claimers = hosts
    watcher.job_enqueue([job() for _ in range(400)], time.time())
    watcher.settings_write([SettingChange("org", "o", values={"cap": 2})], time.time(), by="test")

    threads = Threads()
    samples: list[tuple[float, int]] = []  # (when the sample was taken, jobs of "o" processing)

    def sample() -> None:
        with pg.connect(pg_dsn, autocommit=True) as conn:
            while not threads.stop.is_set():
                at = time.monotonic()
                samples.append((at, sum(processing_by_key(conn, pg_schema, "o").values())))

    def claim_loop(store: Any, name: str) -> tuple[Callable[[], None], StoredSettings]:
        settings = StoredSettings(store)
        rng = random.Random(name)

        def run() -> None:
            held: list[int] = []
            while not threads.stop.is_set():
                now = time.time()
                pending = [p.id for p in store.job_pending(limit=64)]
                finishes = [Finish(i, name, JobStatus.COMPLETED, now) for i in held]
                applied, claimed = store.job_finish_and_claim(
                    finishes, rng.sample(pending, min(2, len(pending))), name, now + 60, now, settings.admission
                )
                assert sorted(applied) == sorted(held), "a stale claim still commits the turn's outcomes"
                held = [r.id for r in claimed]
                if claimed.stale:
                    assert not held and not claimed.at_cap and not claimed.rate_limited
                    settings.stale += 1
                    settings.read()
                time.sleep(0.05 * rng.random() if held else 0.005)
            store.job_finish([Finish(i, name, JobStatus.COMPLETED, time.time()) for i in held])

        return run, settings

    threads.start(sample)
    loops = [claim_loop(store, f"host-{n}") for n, store in enumerate(claimers)]
    for run, _ in loops:
        threads.start(run)
    wait_until(lambda: any(n == 2 for _, n in samples), threads, "the first cap (2) filled")
    old = loops[0][1].admission
    changed_at = time.monotonic()
    version = watcher.settings_write([SettingChange("org", "o", values={"cap": 4})], time.time(), by="test")
    assert version == old.version + 1
    # A claim with the settings from before the change claims nothing, whatever is queued.
    queued = [p.id for p in watcher.job_pending(limit=4)]
    stale = watcher.job_claim(queued, "late-host", time.time() + 60, time.time(), old)
    assert stale.stale and list(stale) == [] and not stale.at_cap
    assert all(r.lease_owner != "late-host" for r in watcher.job_list(org="o", limit=1000))
    wait_until(lambda: any(n == 4 and at > changed_at for at, n in samples), threads, "the new cap (4) filled")
    threads.join()
    assert max(n for at, n in samples if at < changed_at) <= 2, "the first cap was exceeded"
    assert max(n for _, n in samples) <= 4, "the new cap was exceeded"
    # A claimer reads the settings again only when told its claim was stale.
    assert all(s.stale >= 1 and s.admission.version == version for _, s in loops), "every claimer moved on"


def test_settings_changes_are_heard_on_the_store_s_one_listen_connection(pg: Any, pg_dsn: str, hosts: list[Any]) -> None:
    store, other_host = hosts[0], hosts[1]
    heard_settings, heard_jobs = threading.Semaphore(0), threading.Semaphore(0)
    stop_settings = store.settings_subscribe(heard_settings.release)
    stop_jobs = store.job_queued_subscribe(heard_jobs.release)
    try:
        assert heard_settings.acquire(timeout=10) and heard_jobs.acquire(timeout=10), "each subscription calls back once"
        assert other_host.settings_write([SettingChange("org", "o", values={"cap": 1, "rate": None})], 1.0) == 1
        assert heard_settings.acquire(timeout=10), "another host's settings change is heard"
        assert not heard_jobs.acquire(timeout=0.3), "a settings change wakes no job subscriber"
        other_host.job_enqueue([job()], time.time())
        assert heard_jobs.acquire(timeout=10) and not heard_settings.acquire(timeout=0.3)
        with pg.connect(pg_dsn) as conn:
            listening = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%' AND datname = current_database()"
                " AND query LIKE %s", (f"%{store.schema}%",),
            ).fetchone()  # fmt: skip
        assert listening == (1,), "both subscriptions share one connection"
    finally:
        stop_settings()
    assert other_host.settings_write([SettingChange("org", "o", values={"cap": None})], 2.0) == 2
    assert store.settings_read() == (2, []), "a row left with no field is deleted"
    assert not heard_settings.acquire(timeout=0.3), "after unsubscribing nothing calls back"
    other_host.job_enqueue([job()], time.time())
    assert heard_jobs.acquire(timeout=10), "the other subscription still listens"
    stop_jobs()
