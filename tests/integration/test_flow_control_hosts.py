"""Flow control across hosts (issue #15's "Must be true when done"), measured on real
``fairqueue worker`` processes sharing one store, as separate hosts would:

1. noisy user: one user of an org floods; its org-mates' waits stay within a few
   service times, whatever the flood's size, and the org as a whole gets only its
   share against other backlogged orgs;
2. equal shares: an org using 3 kinds and 5 keys gets the slot-time of an org using
   one kind and no key;
3. a rate-limited org never exceeds R·t + burst over any window of its start times,
   runs at R ±5 %, and the unlimited orgs take the remaining slots;
4. an org cap and a per-key cap hold at every sample taken from a connection of the
   test's own, and are reached;
5. a priority-9 job behind 10,000 of its org's jobs starts within a few service
   times; under a constant stream of priority-9 jobs a priority-0 one starts at the
   documented aging rate.

Jobs log "start|end org key job_id wall-time pid" lines (tests/support/fq_flow_hosts.py);
waits, overlaps, rates and slot-time are replayed from those lines, the store's own
start times and the samples. Every figure is printed (``pytest -s``); benches/README.md
("Flow control across hosts (#15)") keeps a run's.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TypeVar

import pytest
from test_crash import SUPPORT

import fairqueue as fq
import fq_flow_hosts as flow
from fairqueue.limits import PRIORITY_AGING
from fairqueue.runtime.duties.affinity import Affinity, home_of
from fairqueue.storage import open_storage

T = TypeVar("T")

SERVICE = 0.05  # seconds each job runs, unless a test says otherwise
# Measured on the shared 2-core machine with 4 processes on PostgreSQL: a slot waits
# about 15 ms between one job's end and the next one's start (the outcome's and the
# claim's commits), so 50 ms jobs keep about 77 % of the slots busy (364 starts/s
# with 4 × 6 slots); 30 ms jobs only 57 %.
DEADLINE = 90.0  # generous: a loaded 2-core machine may start processes slowly
PROCESSES = 4


# ----- stores, workers, logs ---------------------------------------------------------------------


def pg_url_in(dsn: str, schema: str) -> str:
    url = f"{dsn}?schema={schema}"
    open_storage(url).close()  # the schema exists before any worker starts
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = str(tmp_path / "fq.db")
        open_storage(url).close()
        yield url
    else:
        yield pg_url_in(request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema"))


def store_name(url: str) -> str:
    return "PostgreSQL" if "://" in url else "SQLite"


@pytest.fixture
def pg_url(pg_dsn: str, pg_schema: str) -> str:
    return pg_url_in(pg_dsn, pg_schema)


@contextmanager
def another_pg_schema(dsn: str) -> Iterator[str]:
    """A second fresh schema for a test that needs two stores; dropped afterwards."""
    import psycopg

    name = f"fq_test_{uuid.uuid4().hex[:12]}"
    try:
        yield pg_url_in(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class Db:
    """A connection of the test's own to the store's job table, apart from every worker's."""

    def __init__(self, url: str) -> None:
        if "://" in url:
            import psycopg

            dsn, _, schema = url.partition("?schema=")
            conn = psycopg.connect(dsn, autocommit=True)
            self.table = f'"{schema}".fq_jobs'
            self._rows: Callable[[str], list[tuple[Any, ...]]] = lambda sql: conn.execute(sql).fetchall()  # type: ignore[arg-type]
            self.close: Callable[[], None] = conn.close
        else:
            db = sqlite3.connect(url, timeout=30, isolation_level=None)
            self.table = "fq_jobs"
            self._rows = lambda sql: db.execute(sql).fetchall()
            self.close = db.close

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """The rows of ``sql``, whose ``{t}`` names the job table."""
        return self._rows(sql.format(t=self.table))

    def started_at(self, org: str) -> list[float]:
        """The store's start times of ``org``'s jobs (its claims' times), in order."""
        return sorted(float(at) for (at,) in self.rows(f"SELECT started_at FROM {{t}} WHERE org = '{org}' AND started_at IS NOT NULL"))


@contextmanager
def connected(url: str) -> Iterator[Db]:
    db = Db(url)
    try:
        yield db
    finally:
        db.close()


class Sampler:
    """Reads the processing count of every (org, key) over and over, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, dict[tuple[str, str], int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with connected(self.url) as db:
            sql = "SELECT org, key, COUNT(*) FROM {t} WHERE status = 'processing' GROUP BY org, key"
            while not self._stop.is_set():
                counts = {(org, key or flow.NO_KEY): int(n) for org, key, n in db.rows(sql)}
                self.samples.append((time.time(), counts))
                time.sleep(0.002)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def per_org(counts: dict[tuple[str, str], int]) -> collections.Counter[str]:
    """A sample's processing counts summed over each org's keys."""
    total: collections.Counter[str] = collections.Counter()
    for (org, _), n in counts.items():
        total[org] += n
    return total


@contextmanager
def fleet(
    url: str, effects: Path, processes: int = PROCESSES, slots: int = 4, cap: int = 12, affinity: bool = False
) -> Iterator[None]:
    """``processes`` worker processes of fq_flow_hosts:app, each in a session of its own;
    SIGTERMed (they drain their running jobs) and checked to exit 0 at the end."""
    environment = {
        **os.environ, "FQ_STORE": url, "FQ_EFFECTS": str(effects), "FQ_SLOTS": str(slots), "FQ_CAP": str(cap),
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    procs = []
    for n in range(processes):
        with open(effects.with_name(f"{effects.stem}-worker-{n}.err"), "wb") as err:
            procs.append(subprocess.Popen(
                # No resource conservation: the workers share two cores with the database
                # and the test, and a throttled worker would measure the machine, not the policy.
                [sys.executable, "-m", "fairqueue", "worker", "fq_flow_hosts:app", "--slots", str(slots), "--no-conservation",
                 *(["--affinity"] if affinity else [])],
                env=environment, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            ))  # fmt: skip
    try:
        yield
        assert all(p.poll() is None for p in procs), "a worker died during the test"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=DEADLINE) for proc in procs]
    assert codes == [0] * processes, f"a worker stopped by SIGTERM exits 0: {codes}"


@contextmanager
def app_on(url: str) -> Iterator[fq.FairQueue]:
    """The support module's app, enqueueing into ``url``."""
    original = flow.app.storage
    flow.app.storage = open_storage(url)
    flow.app.settings.forget()
    try:
        yield flow.app
    finally:
        flow.app.storage.close()
        flow.app.storage = original
        flow.app.settings.forget()


@dataclass(frozen=True)
class Run:
    org: str
    key: str
    job: str
    start: float
    end: float  # math.inf while it runs
    pid: int


def runs(effects: Path) -> list[Run]:
    """Every logged run, paired start to end by job id, in start order."""
    if not effects.exists():
        return []
    started: dict[str, tuple[str, str, float, int]] = {}
    ended: dict[str, float] = {}
    for line in effects.read_text().splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue  # a line being written right now
        what, org, key, job, at, pid = parts
        if what == "start":
            assert job not in started, f"job {job} started twice"
            started[job] = (org, key, float(at), int(pid))
        else:
            ended[job] = float(at)
    found = [Run(org, key, job, at, ended.get(job, math.inf), pid) for job, (org, key, at, pid) in started.items()]
    return sorted(found, key=lambda r: r.start)


def wait_for(what: str, predicate: Callable[[], T], timeout: float = DEADLINE) -> T:
    """Polls ``predicate`` until it is truthy; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def slot_time(found: list[Run], since: float, until: float, where: Callable[[Run], bool]) -> float:
    """Seconds of slots the runs ``where`` selects held between ``since`` and ``until``."""
    return sum(max(0.0, min(r.end, until) - max(r.start, since)) for r in found if where(r))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def most_overlapping(found: list[Run], group: Callable[[Run], str]) -> dict[str, int]:
    """The most runs of each group whose logged intervals overlapped at one instant."""
    events: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for r in found:
        # At equal times an end sorts before a start: touching intervals do not overlap.
        events[group(r)] += [(r.start, 1), (r.end, -1)]
    most: dict[str, int] = {}
    for name, points in events.items():
        level = peak = 0
        for _, step in sorted(points):
            level += step
            peak = max(peak, level)
        most[name] = peak
    return most


def every_worker_runs(effects: Path, orgs: set[str], processes: int = PROCESSES) -> bool:
    """True once each of the ``processes`` workers has started jobs of every org in ``orgs``."""
    ran: dict[int, set[str]] = collections.defaultdict(set)
    for r in runs(effects):
        ran[r.pid].add(r.org)
    return len(ran) == processes and all(orgs <= seen for seen in ran.values())


def pace(began: float, tick: int, every: float) -> None:
    """Sleeps until the ``tick``-th instant of a stream starting at ``began`` (pacing, not a check)."""
    time.sleep(max(0.0, began + tick * every - time.time()))


# ----- 1. noisy user -----------------------------------------------------------------------------

MATES = ("user-2", "user-3", "user-4")  # the flooding user-1's org-mates
OTHERS = ("org-b", "org-c")
BACKLOG = 3_000  # each other org's backlog: more than it can run while the test lasts
NOISY_SERVICE = 0.1  # long enough that "a few service times" is above a busy machine's claim latency
NOISY_SLOTS = 6
# Every org trickles the same way (user-1's org-mates, and three "live" keys of each
# other org): claims that race other workers for a fresh job cost a slot a turn, so
# orgs that trickle alike pay alike, and the shares compare what the flood does.
LIVE = ("live-1", "live-2", "live-3")
TRICKLE_EVERY = 0.1  # one job of each trickling key every 100 ms
TRICKLE_FOR = 6.0


@dataclass
class NoisyRound:
    flood: int
    mate_waits: list[float]
    other_waits: list[float]
    shares: dict[str, float]  # org -> slot-seconds while all three were backlogged
    starts_per_second: float

    def show(self) -> str:
        total = sum(self.shares.values())
        return (
            f"flood {self.flood:>7,}: org-mates' wait p50 {percentile(self.mate_waits, 0.5) * 1e3:.0f} ms, "
            f"p99 {percentile(self.mate_waits, 0.99) * 1e3:.0f} ms, max {max(self.mate_waits) * 1e3:.0f} ms "
            f"({len(self.mate_waits)} jobs); other orgs' trickle p99 {percentile(self.other_waits, 0.99) * 1e3:.0f} ms; "
            f"{self.starts_per_second:.0f} starts/s; slot-time " + ", ".join(f"{org} {s / total:.1%}" for org, s in self.shares.items())
        )


def noisy_round(url: str, effects: Path, flood: int) -> NoisyRound:
    """user-1 of org "noisy" floods; org-b and org-c are backlogged too (so that every
    org is, and shares can be compared); user-2..4 of noisy trickle one job every
    100 ms each, and so do three "live" keys of each other org. 4 processes × 6
    slots of 100 ms jobs: about 200 starts/s, each org's share about 8 slots, each of
    noisy's four keys' about 2, twice what a mate asks for."""
    enqueued: dict[str, tuple[str, str, float]] = {}  # job id -> org, key, when its enqueue began
    with app_on(url):
        flow.work.delay_many("noisy", [(NOISY_SERVICE,)] * flood, key="user-1")
        for org in OTHERS:
            flow.work.delay_many(org, [(NOISY_SERVICE,)] * BACKLOG)
        with fleet(url, effects, slots=NOISY_SLOTS):
            # Each worker reads the whole backlog before its first turn: measure once all
            # of them run (the first turns are a start-up, not the steady state under a flood).
            wait_for("every worker running every backlogged org", lambda: every_worker_runs(effects, {"noisy", *OTHERS}))
            began = time.time()
            streams = [("noisy", mate) for mate in MATES] + [(org, key) for org in OTHERS for key in LIVE]
            for tick in range(round(TRICKLE_FOR / TRICKLE_EVERY)):
                pace(began, tick, TRICKLE_EVERY)
                for org, key in streams:
                    at = time.time()
                    enqueued[str(flow.work.options(key=key).delay(org, NOISY_SERVICE).id)] = (org, key, at)
            ended = time.time()
            wait_for("every trickled job to start", lambda: set(enqueued) <= {r.job for r in runs(effects)})
    found = runs(effects)
    start = {r.job: r.start for r in found}
    for org, key in [("noisy", "user-1")] + [(org, flow.NO_KEY) for org in OTHERS]:
        ran = sum(1 for r in found if (r.org, r.key) == (org, key) and r.start <= ended)
        assert ran < (flood if org == "noisy" else BACKLOG), f"{org}/{key} ran out of backlog before the trickle ended"
    shares = {org: slot_time(found, began, ended, lambda r, o=org: r.org == o) for org in ("noisy", *OTHERS)}  # type: ignore[misc]
    waits = {job: start[job] - at for job, (_, _, at) in enqueued.items()}
    return NoisyRound(
        flood,
        [w for job, w in waits.items() if enqueued[job][0] == "noisy"],
        [w for job, w in waits.items() if enqueued[job][0] != "noisy"],
        shares,
        sum(1 for r in found if began <= r.start < ended) / (ended - began),
    )


@pytest.mark.timeout(300)
def test_a_flooding_user_leaves_its_org_mates_waits_short_and_its_org_its_share(pg_url: str, pg_dsn: str, tmp_path: Path) -> None:
    rounds = []
    for n, flood in enumerate((10_000, 100_000)):
        with another_pg_schema(pg_dsn) if n else nullcontext(pg_url) as url:
            rounds.append(noisy_round(url, tmp_path / f"flood-{flood}.log", flood))
        print(f"\nnoisy-user, 4 processes x {NOISY_SLOTS} slots, {NOISY_SERVICE * 1e3:.0f} ms jobs: {rounds[-1].show()}")
    for measured in rounds:
        p99 = percentile(measured.mate_waits, 0.99)
        # Behind user-1's flood in one FIFO line they would wait minutes (10,000 jobs ×
        # 100 ms over the org's ~8 slots: 2 min); their own key lines run them at once.
        # Measured 0.29-0.30 s at 10,000 and 0.42 s at 100,000 on a quiet machine, up to
        # 0.88 s at 100,000 beside other PostgreSQL benchmarks: the bounds allow for a
        # loaded machine (10 service times; 3x between the floods, 2x the figure).
        assert p99 <= 10 * NOISY_SERVICE, f"org-mates' p99 wait {p99:.3f} s under a flood of {measured.flood:,}"
        equal = sum(measured.shares.values()) / len(measured.shares)
        off = abs(measured.shares["noisy"] - equal) / equal
        assert off <= 0.10, f"noisy org's slot-time {off:.1%} off an equal share: {measured.shares}"
    # The p99 must not grow with the flood: 3x between them, plus two service times, as
    # a wait is counted in whole jobs ahead (since the trickle is spread evenly, the
    # 10,000 round's p99 fell to 77-134 ms, and 230-254 ms at 100,000 is still under
    # 3 job lengths: the ratio alone failed once).
    first, second = (percentile(r.mate_waits, 0.99) for r in rounds)
    assert second <= 3 * first + 2 * NOISY_SERVICE, f"org-mates' p99 {first:.3f} s under 10,000, {second:.3f} s under 100,000"


# ----- 2. equal shares ---------------------------------------------------------------------------

WIDE_KEYS = tuple(f"k{n}" for n in range(1, 6))
SHARE_FOR = 6.0  # seconds measured


@pytest.mark.timeout(300)
def test_an_org_using_three_kinds_and_five_keys_gets_the_slot_time_of_one_using_one(pg_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    per_line = 400  # each of wide's 15 lines; narrow's one line holds 3,000
    with app_on(pg_url) as app:
        flow.work.delay_many("narrow", [(SERVICE,)] * 3_000)
        for key in WIDE_KEYS:
            flow.work.delay_many("wide", [(SERVICE,)] * per_line, key=key)
            for first in range(0, per_line, 1_000):
                with app.transaction():
                    for _ in range(first, min(per_line, first + 1_000)):
                        app.enqueue(flow.Work(SERVICE), org="wide", key=key)
            app.execute_batch(flow.Chunks(per_line, SERVICE), org="wide", scope=1, key=key)
        with fleet(pg_url, effects, slots=3):
            wait_for("every kind of both orgs running",
                     lambda: {(r.org, "." in r.job) for r in runs(effects)} >= {("narrow", False), ("wide", True)})  # fmt: skip
            began = time.time()
            time.sleep(SHARE_FOR)  # the measured window (pass or fail is decided from the logs)
            ended = time.time()
    found = runs(effects)
    started = collections.Counter(r.org for r in found if r.start <= ended)
    assert started["narrow"] < 3_000 and started["wide"] < 15 * per_line, f"an org ran out of backlog: {started}"
    narrow = slot_time(found, began, ended, lambda r: r.org == "narrow")
    wide = slot_time(found, began, ended, lambda r: r.org == "wide")

    def kind(r: Run) -> str:
        return "batch" if "." in r.job else "future/queueable"

    by_line = collections.Counter(f"{kind(r)}/{r.key}" for r in found if r.org == "wide" and began <= r.start <= ended)
    print(f"\nequal shares, 4 processes x 3 slots, {SERVICE * 1e3:.0f} ms jobs, {SHARE_FOR:.0f} s: "
          f"wide (3 kinds, 5 keys) {wide:.1f} slot-s, narrow (1 kind, no key) {narrow:.1f} slot-s "
          f"({(wide - narrow) / ((wide + narrow) / 2):+.1%}); wide's starts by line {dict(sorted(by_line.items()))}")  # fmt: skip
    assert abs(wide - narrow) <= 0.10 * (wide + narrow) / 2, f"wide {wide:.1f} s against narrow {narrow:.1f} s"


# ----- 3. a rate-limited org ---------------------------------------------------------------------

RATE, BURST = 20.0, 5
RATE_FOR = 8.0


def over_any_window(starts: list[float], rate: float, burst: int) -> Optional[str]:
    """The first window of start events holding more than ``rate × t + burst`` starts, described; None if none."""
    for i, first in enumerate(starts):
        for j in range(i, len(starts)):
            n, t = j - i + 1, starts[j] - first
            # The store keeps times as floats: n starts may open (n + 2) last places
            # early, and no more (tests/unit/test_store_rate_limits.py).
            if n > rate * (t + (n + 2) * math.ulp(starts[j])) + burst:
                return f"{n} starts in {t:.4f} s (from the {i + 1}th), above {rate:g}/s × t + {burst}"
    return None


@pytest.mark.timeout(300)
def test_a_rate_limited_org_runs_at_its_rate_over_every_window_while_unlimited_ones_use_the_rest(store_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    slots = 4
    with app_on(store_url) as app, Sampler(store_url) as sampler:
        app.set_limits("limited", rate=fq.RateLimit(RATE, burst=BURST))
        flow.work.delay_many("limited", [(SERVICE,)] * 1_000)
        for org in ("free-a", "free-b"):
            flow.work.delay_many(org, [(SERVICE,)] * 4_000)
        with fleet(store_url, effects, slots=slots):
            wait_for("the limited org running", lambda: sum(1 for r in runs(effects) if r.org == "limited") >= 10)
            began = time.time()
            time.sleep(RATE_FOR)  # the measured window (pass or fail is decided from the store's times and logs)
            ended = time.time()
    with connected(store_url) as db:
        claimed = db.started_at("limited")
    found = runs(effects)
    assert len(claimed) == sum(1 for r in found if r.org == "limited") < 1_000, "still backlogged at the end"
    steady = [t for t in claimed if began <= t <= ended]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    free = {org: slot_time(found, began, ended, lambda r, o=org: r.org == o) / (ended - began) for org in ("free-a", "free-b")}  # type: ignore[misc]
    limited = slot_time(found, began, ended, lambda r: r.org == "limited") / (ended - began)
    # What the store holds processing (claimed, not yet finished) at each sample, by org.
    held = [per_org(c) for at, c in sampler.samples if began <= at <= ended]
    free_held = sorted(c["free-a"] + c["free-b"] for c in held)
    limited_held = max(c["limited"] for c in held)
    print(f"\nrate-limited ({store_name(store_url)}), 4 processes x {slots} slots, {SERVICE * 1e3:.0f} ms jobs: "
          f"limited {RATE:g}/s burst {BURST}: "
          f"{rate:.2f} starts/s over {steady[-1] - steady[0]:.1f} s ({rate / RATE - 1:+.1%}), {limited:.2f} slots; "
          "unlimited " + ", ".join(f"{org} {n:.2f} slots" for org, n in free.items()) + f" of {PROCESSES * slots}; "
          f"the store held processing: unlimited median {free_held[len(free_held) // 2]}, min {free_held[0]}, "
          f"limited at most {limited_held} ({len(held)} samples)")  # fmt: skip
    assert over_any_window(claimed, RATE, BURST) is None, over_any_window(claimed, RATE, BURST)
    assert abs(rate / RATE - 1) <= 0.05, f"measured {rate:.2f}/s against a limit of {RATE:g}/s"
    # The limited org can hold only about R × 50 ms = 1 slot (6 over a 50 ms burst);
    # the unlimited ones hold the rest: most of the 16 at the median sample.
    assert all(n > 0 for n in free.values())
    assert free_held[len(free_held) // 2] >= 0.6 * PROCESSES * slots, f"the unlimited orgs left slots idle: {free}"


# ----- 4. per-key cap and org cap ----------------------------------------------------------------

KEYS = tuple(f"user-{n}" for n in range(10))


@pytest.mark.timeout(300)
def test_an_org_cap_and_a_per_key_cap_hold_at_every_sample_across_four_processes(store_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    seconds, per_key = 0.1, 20
    with app_on(store_url) as app, Sampler(store_url) as sampler:
        app.set_limits("capped", cap=6, per_key_cap=2)
        for key in KEYS:
            flow.work.delay_many("capped", [(seconds,)] * per_key, key=key)
        flow.work.delay_many("free", [(seconds,)] * 200)  # uses the slots the capped org may not
        with fleet(store_url, effects, slots=4), connected(store_url) as db:
            done = "SELECT COUNT(*) FROM {t} WHERE org = 'capped' AND status = 'completed'"
            wait_for("every capped job to complete", lambda: db.rows(done)[0][0] == len(KEYS) * per_key)
    samples = [counts for _, counts in sampler.samples]
    key_peak = max((n for c in samples for (org, _), n in c.items() if org == "capped"), default=0)
    org_peak = max((per_org(c)["capped"] for c in samples), default=0)
    found = runs(effects)
    overlap_keys = most_overlapping([r for r in found if r.org == "capped"], lambda r: r.key)
    overlap_org = most_overlapping(found, lambda r: r.org)
    print(f"\ncaps across 4 processes ({store_name(store_url)}): "
          f"{len(samples)} samples; capped org peak {org_peak} (cap 6), busiest key peak {key_peak} (cap 2); "
          f"replayed from the logs: org {overlap_org['capped']}, keys {max(overlap_keys.values())}, "
          f"free {overlap_org['free']}")  # fmt: skip
    assert key_peak <= 2 and max(overlap_keys.values()) <= 2, "a key went over its cap of 2"
    assert org_peak <= 6 and overlap_org["capped"] <= 6, "the org went over its cap of 6"
    assert org_peak == 6 and key_peak == 2, "the caps were reached (the check is not vacuous)"
    assert overlap_org["free"] > 6, "the other org used the slots the capped one could not"


# ----- 5. priorities -----------------------------------------------------------------------------

PRIORITY_SERVICE = 0.1
HIGH_QUEUED = 20  # the high-priority stream keeps this many queued: a constant stream, never a growing backlog


@pytest.mark.timeout(300)
def test_a_priority_9_job_behind_10000_of_its_orgs_jobs_starts_within_a_few_service_times(pg_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    with app_on(pg_url):
        flow.work.delay_many("busy", [(PRIORITY_SERVICE,)] * 10_000)
        flow.work.delay_many("other", [(PRIORITY_SERVICE,)] * 1_000)
        with fleet(pg_url, effects, slots=2):
            wait_for("both orgs running", lambda: {"busy", "other"} <= {r.org for r in runs(effects)})
            urgent_at = time.time()
            urgent = str(flow.work.options(priority=9).delay("busy", PRIORITY_SERVICE).id)
            wait_for("the priority-9 job to start", lambda: urgent in {r.job for r in runs(effects)})
    found = runs(effects)
    start = {r.job: r.start for r in found}
    urgent_wait = start[urgent] - urgent_at
    ahead = sum(1 for r in found if r.org == "busy" and r.job != urgent and r.start <= start[urgent])
    print(f"\npriority, 4 processes x 2 slots, {PRIORITY_SERVICE * 1e3:.0f} ms jobs: a priority-9 job behind 10,000 "
          f"priority-5 ones of its org started {urgent_wait * 1e3:.0f} ms after its enqueue "
          f"({ahead} of them had started by then, {10_000 - ahead:,} still queued)")  # fmt: skip
    assert urgent_wait <= 5 * PRIORITY_SERVICE, f"the priority-9 job waited {urgent_wait:.3f} s"
    assert ahead < 1_000, "it started ahead of its org's backlog"


@pytest.mark.timeout(300)
def test_priority_0_jobs_start_by_aging_under_a_constant_stream_of_priority_9_ones(store_url: str, tmp_path: Path) -> None:
    """4 processes × 1 slot of 100 ms jobs. Org "stream" gets priority-9 jobs as fast
    as it runs them (always HIGH_QUEUED queued: a constant stream, not a growing
    backlog). Priority-0 jobs enqueued into it then start by aging, at the documented
    rate (fairqueue.limits.PRIORITY_AGING, 10 s a level): after 9 × 10 s, when they
    rank with the priority-9 jobs enqueued then, plus the time to run the HIGH_QUEUED
    enqueued before (about 0.5 s) — and not before. (9 × 10 s is most of this file's
    running time; a faster check would need another aging rate, which workers do not
    take.)"""
    effects = tmp_path / "effects.log"
    with app_on(store_url):
        flow.work.delay_many("stream", [(PRIORITY_SERVICE,)] * HIGH_QUEUED, priority=9)
        with fleet(store_url, effects, slots=1), connected(store_url) as db:
            wait_for("the stream running", lambda: runs(effects))
            queued_high = "SELECT COUNT(*) FROM {t} WHERE org = 'stream' AND status = 'queued' AND priority = 9"

            def top_up() -> None:
                missing = HIGH_QUEUED - int(db.rows(queued_high)[0][0])
                if missing > 0:
                    flow.work.delay_many("stream", [(PRIORITY_SERVICE,)] * missing, priority=9)

            low_at = time.time()
            low = {str(h.id) for h in flow.work.delay_many("stream", [(PRIORITY_SERVICE,)] * 3, priority=0)}
            deadline = time.monotonic() + 9 * PRIORITY_AGING + DEADLINE
            while not low & {r.job for r in runs(effects)}:
                assert time.monotonic() < deadline, "no priority-0 job started under the high-priority stream"
                top_up()
                time.sleep(0.05)  # pacing the stream, not a check
    found = runs(effects)
    first_low = min(r.start for r in found if r.job in low) - low_at
    highs = sum(1 for r in found if r.job not in low and low_at <= r.start <= low_at + first_low)
    print(f"\naging, 4 processes x 1 slot, {PRIORITY_SERVICE * 1e3:.0f} ms jobs: the first priority-0 job under a constant "
          f"priority-9 stream started after {first_low:.1f} s (documented: 9 x {PRIORITY_AGING:g} s), "
          f"{highs} priority-9 jobs started meanwhile")  # fmt: skip
    assert first_low >= 9 * PRIORITY_AGING - 5, f"a priority-0 job started after {first_low:.1f} s: before its aging"
    assert first_low <= 9 * PRIORITY_AGING + HIGH_QUEUED * PRIORITY_SERVICE / 4 + 5 * PRIORITY_SERVICE + 2.0, (
        f"the first priority-0 job started {first_low:.1f} s after its enqueue"
    )


# ----- 7. org affinity ---------------------------------------------------------------------------

def orgs_at_homes(names: list[str], per_worker: list[int]) -> list[str]:
    """Org names whose homes among ``names`` are ``per_worker[i]`` orgs at worker i."""
    wanted = dict(zip(names, per_worker))
    chosen: list[str] = []
    for i in range(100_000):
        org = f"tenant-{i}"
        home = home_of(org, names)
        if wanted[home] > 0:
            wanted[home] -= 1
            chosen.append(org)
            if not any(wanted.values()):
                return chosen
    raise AssertionError("no such orgs among 100,000 names")


@pytest.mark.timeout(300)
def test_with_affinity_orgs_run_more_at_home_and_keep_equal_shares_across_four_processes(
    store_url: str, tmp_path: Path
) -> None:
    """8 orgs flood 4 processes × 8 slots, their homes as uneven as 1, 1, 2 and 4 orgs
    a worker. Home workers weight their orgs up (fairqueue.runtime.duties.affinity:
    here as if each org had one slot at home and an equal part of the rest): each org
    gets the same slot-time (within 15 % of the mean), 37-47 % of its runs are at home
    against the quarter they would be without affinity, and every org still runs on
    other workers too (a preference, not a partition)."""
    effects = tmp_path / "effects.log"
    with app_on(store_url) as app, fleet(store_url, effects, slots=8, affinity=True):
        live = wait_for("4 live workers", lambda: [w.info for w in app.storage.worker_list() if w.alive]
                        if sum(w.alive for w in app.storage.worker_list()) == PROCESSES else None)  # fmt: skip
        names = [w.name for w in live]
        orgs = orgs_at_homes(names, [1, 1, 2, 4])
        for org in orgs:
            flow.work.delay_many(org, [(SERVICE,)] * 1_500)
        wait_for("every org running", lambda: {r.org for r in runs(effects)} >= set(orgs))
        time.sleep(2 * Affinity.every)  # every worker has computed its homes (pass or fail is decided from the logs)
        began = time.time()
        time.sleep(SHARE_FOR)
        ended = time.time()
    found = runs(effects)
    started = collections.Counter(r.org for r in found if r.start <= ended)
    assert all(started[org] < 1_500 for org in orgs), f"an org ran out of backlog: {started}"
    home_pid = {org: next(w.pid for w in live if w.name == home_of(org, names)) for org in orgs}
    window = [r for r in found if began <= r.start <= ended]
    shares = {org: slot_time(found, began, ended, lambda r, o=org: r.org == o) for org in orgs}
    at_home = {org: sum(r.pid == home_pid[org] for r in window if r.org == org) / max(1, sum(r.org == org for r in window))
               for org in orgs}  # fmt: skip
    mean = sum(shares.values()) / len(shares)
    print(f"\naffinity, 4 processes x 8 slots, 8 orgs at homes 1/1/2/4, {SERVICE * 1e3:.0f} ms jobs, {SHARE_FOR:.0f} s: "
          f"slot-s per org {min(shares.values()):.1f}-{max(shares.values()):.1f} (mean {mean:.1f}); runs at home "
          f"{min(at_home.values()):.0%}-{max(at_home.values()):.0%}, mean {sum(at_home.values()) / len(at_home):.0%} "
          f"(without affinity: 25 %)")  # fmt: skip
    assert all(abs(s - mean) <= 0.15 * mean for s in shares.values()), f"unequal shares: {shares}"
    assert sum(at_home.values()) / len(at_home) >= 0.3, f"orgs ran at home no more than anywhere: {at_home}"
    elsewhere = {org: {r.pid for r in window if r.org == org} - {home_pid[org]} for org in orgs}
    assert all(elsewhere.values()), f"an org ran at home only (a partition, not a preference): {elsewhere}"
