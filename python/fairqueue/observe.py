"""Why a job waits: :func:`explain` (``app.explain(job_id)``, ``fairqueue explain ID``).

The answer comes from the store, so it works from any process: the job's state,
its place in its org's line and in the whole queue, the jobs holding its org's
slots when the org is at its cap, its place in the flex queue, a run-at time in
the future, and an estimated start computed from how fast the line and the
whole queue have been moving lately, with that basis stated.

The rate is measured over the time the line (or the queue) had work: from the
records of its latest finished jobs, each counting as work from the time it was
ready to the time it finished, and the running and waiting ones up to now. A
line that drained, sat idle for ten minutes and took a new backlog is estimated
at the pace it drains, not at its jobs per minute averaged over the idle ones.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Optional

from fairqueue.limits import PRIORITY_AGING as AGING_SECONDS
from fairqueue.records import JobRecord, JobStatus, RateScope, WaitingFacts
from fairqueue.settings import QueueSettings, rate_of
from fairqueue.storage import Storage

__all__ = ["Explanation", "Reason", "explain", "RATE_WINDOW", "RATE_LOOKBACK", "RATE_JOBS", "Pace", "pace",
           "predicted_waits", "FLEET_RATE_JOBS"]

RATE_WINDOW = 300.0
"""Seconds back the store's waiting facts count finished jobs."""
RATE_LOOKBACK = 3600.0
"""Seconds back the estimate looks for finished jobs to measure a rate by."""
RATE_JOBS = 200
"""The latest finished jobs (of its line; of the queue) a rate is measured over, at most."""
FLEET_RATE_JOBS = 2000
"""The store's latest finished jobs (of each status) :func:`predicted_waits` measures every line's rate over."""
HISTORY_LOOKBACK = 3600.0
"""Seconds of recorded history (extended delays, throttling) explain looks at."""


@dataclass(frozen=True)
class Reason:
    """One reason a job has not started (or what delayed it, once it ran)."""

    code: str
    """``running``, ``finished``, ``holding``, ``scheduled``, ``cap_reached``,
    ``outside_peek_set``, ``extended_delay``, ``throttled``, ``queued_behind``,
    ``daily_limit``, ``no_worker``, ``retried`` or ``redelivered``."""
    message: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Explanation:
    """Why job ``job_id`` is where it is, and when it should start."""

    job_id: int
    org: str
    kind: str
    status: str
    reasons: list[Reason]
    ahead_in_line: Optional[int] = None
    """Queued jobs of the same org and kind before it (None once it started)."""
    ahead_in_queue: Optional[int] = None
    """Queued jobs of any org before it."""
    estimated_start: Optional[float] = None
    """Unix time; None when there is no basis (nothing finished lately) or it started."""
    estimate_basis: Optional[str] = None
    waited: Optional[float] = None
    """Seconds from enqueue (or run-at) to start, once it started."""
    ran: Optional[float] = None
    """Seconds from start to finish, once it finished."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def render(self) -> str:
        """A readable explanation, one fact per line."""
        lines = [f"job {self.job_id} ({self.kind}, org {self.org!r}) is {self.status}"]
        lines += [f"  - {reason.message}" for reason in self.reasons]
        if self.estimated_start is not None:
            lines.append(f"  estimated start: {_when(self.estimated_start)} ({self.estimate_basis})")
        elif self.estimate_basis:
            lines.append(f"  no estimate: {self.estimate_basis}")
        return "\n".join(lines)


def explain(store: Storage, settings: QueueSettings, job_id: int, *, now: Optional[float] = None) -> Explanation:
    """Explains job ``job_id`` (see the module docstring).

    Raises:
        LookupError: there is no such job.
    """
    now = time.time() if now is None else now
    settings = settings.fresh()
    record = store.job_get(job_id)
    if record is None:
        raise LookupError(f"no job with id {job_id}")

    def answer(reasons: list[Reason], **more: Any) -> Explanation:
        return Explanation(record.id, record.org, record.kind, record.status.value, reasons, **more)

    if record.status.finished:
        return answer(_finished(record), **_durations(record))
    if record.status in (JobStatus.PROCESSING, JobStatus.PREPARING):
        since = f" since {_when(record.started_at)}" if record.started_at else ""
        message = f"running{since} on {record.lease_owner} (delivery {record.attempts})"
        running = Reason("running", message, {"worker": record.lease_owner, "attempt": record.attempts})
        return answer([running, *_redelivered(record)], **_durations(record))
    facts = store.job_waiting_facts(record, now, RATE_WINDOW)
    reasons: list[Reason] = []
    if record.status is JobStatus.HOLDING:
        line = [r.id for r in store.flex_list(record.org)]
        position = line.index(record.id) + 1 if record.id in line else None
        reasons.append(Reason(
            "holding",
            f"holding in org {record.org!r}'s flex queue at position {position} of {len(line)}: it starts when one of "
            f"the org's 5 running batch jobs ends and the {(position or 1) - 1} before it have started",
            {"position": position, "holding": len(line)},
        ))  # fmt: skip
    if record.run_at is not None and record.run_at > now:
        reasons.append(Reason("scheduled", f"scheduled: it may not start before {_when(record.run_at)}", {"run_at": record.run_at}))
    cap = settings.cap(record.org, record.kind)
    if cap is not None and len(facts.holders) >= cap:
        shown = ", ".join(map(str, facts.holders[:10])) + (" …" if len(facts.holders) > 10 else "")
        reasons.append(Reason(
            "cap_reached",
            f"org {record.org!r} is at its cap: {len(facts.holders)} of {cap} {record.kind} slots, held by jobs {shown}",
            {"running": len(facts.holders), "cap": cap, "holders": facts.holders},
        ))  # fmt: skip
    reasons += _flow_control(store, settings, record, now)
    # The registry, not recent finishes, says whether anything will run it: a worker
    # that just started has finished nothing, and one that stopped may have a minute ago.
    registry = store.worker_list()
    live = {w.info.name for w in registry if w.alive}
    reasons += _from_history(store, record, now, live)
    if settings.policy == "peek_set" and facts.ahead_in_queue >= settings.limits.peek_set:
        reasons.append(Reason(
            "outside_peek_set",
            f"outside the peek set: {facts.ahead_in_queue} jobs are ahead of it and free slots look at the first "
            f"{settings.limits.peek_set} only (peek_set policy)",
            {"ahead_in_queue": facts.ahead_in_queue, "peek_set": settings.limits.peek_set},
        ))  # fmt: skip
    if facts.ahead_in_line:
        reasons.append(Reason(
            "queued_behind",
            f"{facts.ahead_in_line} {record.kind} jobs of org {record.org!r} are ahead of it in its line "
            f"({facts.ahead_in_queue} jobs ahead in the whole queue)",
            {"ahead_in_line": facts.ahead_in_line, "ahead_in_queue": facts.ahead_in_queue},
        ))  # fmt: skip
    usage = store.usage_daily(record.org, now)
    limit = settings.daily_limit(record.org)
    if usage.count >= limit:
        reasons.append(Reason(
            "daily_limit",
            f"org {record.org!r} is at its daily limit ({usage.count:,} of {limit:,} async executions in 24 hours): "
            f"this job runs, but the jobs it would enqueue are refused until {_when(usage.resets_at)}",
            {"count": usage.count, "limit": limit, "resets_at": usage.resets_at},
        ))  # fmt: skip
    if not live:
        gone = f" ({_count(len(registry), 'registered worker')} stopped or died)" if registry else ""
        reasons.append(Reason(
            "no_worker",
            f"no live worker is registered with the store{gone}: is a worker running (fairqueue worker APP)?",
            {"registered": len(registry), "live": 0},
        ))  # fmt: skip
    elif not any(w.info.queues is None or record.queue in w.info.queues for w in registry if w.alive):
        reasons.append(Reason(
            "no_worker",
            f"no worker serves queue {record.queue!r}: it starts once a worker serving it runs "
            f"(fairqueue worker APP --queues {record.queue})",
            {"queue": record.queue, "live": len(live)},
        ))  # fmt: skip
    reasons += _redelivered(record)
    estimate, basis = _estimate(store, record, facts, now, fair=settings.policy == "fair_share")
    return answer(reasons, ahead_in_line=facts.ahead_in_line, ahead_in_queue=facts.ahead_in_queue,
                  estimated_start=estimate, estimate_basis=basis)  # fmt: skip


def _flow_control(store: Storage, settings: QueueSettings, record: JobRecord, now: float) -> list[Reason]:
    """What the stored tenant settings hold it back by: a pause, its org's or key's cap,
    a rate limit with no room; and its priority, if not the default."""
    reasons: list[Reason] = []
    pause = settings.paused(record.org, record.kind, record.key, record.queue)
    if pause is not None:
        reasons.append(Reason(
            "paused",
            f"paused since {_when(pause.at)} by {pause.by or 'someone unnamed'}: {pause.scope} is paused, so its jobs "
            "stay queued until it is resumed (app.resume, fairqueue tenants resume)",
            {"since": pause.at, "by": pause.by, "scope": pause.scope},
        ))  # fmt: skip
    if settings.policy != "fair_share":
        return reasons
    org = settings.org(record.org)
    key = settings.key(record.org, record.key) if record.key is not None else None
    org_cap = org["cap"].value
    key_cap = key["cap"].value if key is not None else None
    if org_cap is not None or key_cap is not None:
        running = store.job_list(org=record.org, status=JobStatus.PROCESSING, limit=10_000)
        if org_cap is not None and len(running) >= org_cap:
            reasons.append(Reason(
                "org_cap_reached",
                f"org {record.org!r} holds {len(running)} of {org_cap} slots (its cap over every kind and key)",
                {"running": len(running), "cap": org_cap},
            ))  # fmt: skip
        holders = [r.id for r in running if r.key == record.key]
        if key_cap is not None and len(holders) >= key_cap:
            reasons.append(Reason(
                "key_cap_reached",
                f"{record.key} holds {len(holders)} of {key_cap} (the cap of each key of org {record.org!r}: "
                f"{key['cap'].source if key is not None else ''})",
                {"key": record.key, "running": len(holders), "cap": key_cap, "holders": holders},
            ))  # fmt: skip
    scopes: list[tuple[RateScope, Any, str]] = [
        ((record.org, "org", ""), org["rate"].value, f"org {record.org!r}"),
        ((record.org, "kind", record.kind), settings.pair(record.org, record.kind)["rate"].value,
         f"{record.kind} jobs of org {record.org!r}"),
    ]  # fmt: skip
    if key is not None:
        scopes.append(((record.org, "key", str(record.key)), key["rate"].value, f"key {record.key!r} of org {record.org!r}"))
    limited = [(scope, value, who) for scope, value, who in scopes if value is not None]
    if limited:
        tats = store.rate_states([scope for scope, _, _ in limited])
        for scope, value, who in limited:
            rate = rate_of(value)
            assert rate is not None
            tat = tats.get(scope)
            # GCRA: a job of this cost has room once the scope's arrival time is within the burst.
            burst = int(rate.burst or 1)
            room = None if tat is None else tat + (record.cost - burst) * rate.per / rate.rate
            waiting = room is not None and room > now
            reasons.append(Reason(
                "rate_limited" if waiting else "rate_limit",
                f"{who} is limited to {rate}" + (f"; next room for this job (cost {record.cost}) at {_when(room)}"
                                                  if waiting else "; it has room now"),
                {"scope": list(scope), "rate": rate.rate, "per": rate.per, "burst": rate.burst, "cost": record.cost,
                 "next_room": room if waiting else None},
            ))  # fmt: skip
    if record.priority != 5:
        reasons.append(Reason(
            "priority",
            f"priority {record.priority} (0-9, default 5): within its org's line, higher priorities start first; "
            f"waiting raises a job one level every {AGING_SECONDS:g} s, so none waits for ever",
            {"priority": record.priority, "aging_seconds": AGING_SECONDS},
        ))  # fmt: skip
    return reasons


def _from_history(store: Storage, record: JobRecord, now: float, live: set[str]) -> list[Reason]:
    """What workers recorded: an extended delay of its org and kind still running, and
    the ``live`` workers throttled by resource conservation now (a worker that stopped
    or died while throttled recorded no end: it holds nothing back any more)."""
    reasons = []
    history = store.history_read(now - HISTORY_LOOKBACK, ["extended_delay", "throttle_start", "throttle_end"])
    delays = [e for e in history if e.kind == "extended_delay" and e.org == record.org
              and e.figures.get("kind") == record.kind]  # fmt: skip
    if delays and delays[-1].value > now:
        reasons.append(Reason(
            "extended_delay",
            f"in extended delay until {_when(delays[-1].value)}: every job in the peek set belonged to org "
            f"{record.org!r}, at its cap, so they were put back ({len(delays)} time{'s' if len(delays) > 1 else ''} "
            "in the last hour)",
            {"until": delays[-1].value, "times": len(delays), "count": delays[-1].figures.get("count")},
        ))  # fmt: skip
    throttled: dict[str, Any] = {}
    for e in history:
        if e.kind in ("throttle_start", "throttle_end"):
            worker = str(e.figures.get("worker"))
            if e.kind == "throttle_start":
                throttled[worker] = e
            else:
                throttled.pop(worker, None)
    for worker, e in sorted((w, e) for w, e in throttled.items() if w in live):
        resources = ", ".join(e.figures.get("resources") or []) or "interactive load"
        reasons.append(Reason(
            "throttled",
            f"worker {worker} is throttled by resource conservation to {e.value:.0%} of its slots ({resources})",
            {"worker": worker, "capacity": e.value, "resources": e.figures.get("resources"), "since": e.at},
        ))  # fmt: skip
    return reasons


@dataclass(frozen=True)
class Pace:
    """How fast a line (or the whole queue) has been moving while it had work."""

    rate: float
    """Jobs finished per second of work."""
    finished: int
    """Jobs finished within the measured span."""
    busy: float
    """Seconds of the span during which it had work (a job ready, waiting or running)."""
    span: float
    """Seconds from the start of the measurement to now."""

    def __str__(self) -> str:
        idle = f" of the last {_duration(self.span)}" if self.span > self.busy * 1.05 + 1 else ""
        return f"{self.rate:.2f} jobs/s while it had work ({_count(self.finished, 'job')} in {_duration(self.busy)}{idle})"


def pace(store: Storage, now: float, *, org: Optional[str] = None, kind: Optional[str] = None,
         ready_since: Optional[float] = None) -> Optional[Pace]:  # fmt: skip
    """How fast the line of ``org`` and ``kind`` (both None: the whole queue) has moved
    while it had work, from its latest :data:`RATE_JOBS` jobs finished within
    :data:`RATE_LOOKBACK` seconds; None if none finished.

    A job is work from its ready time (enqueue, run-at or retry time) until it
    finished, or until now while it waits or runs; ``ready_since`` adds a job known to
    be waiting since then (the one being explained). Time with no job in the line is
    left out, so idle minutes do not slow the rate down.
    """
    finished = [r for status in (JobStatus.COMPLETED, JobStatus.FAILED)
                for r in store.job_list(org=org, kind=kind, status=status, limit=RATE_JOBS)]  # fmt: skip
    running = store.job_list(org=org, kind=kind, status=JobStatus.PROCESSING, limit=RATE_JOBS)
    return _measure(finished, running, now, ready_since)


def _measure(finished: list[JobRecord], running: list[JobRecord], now: float,
             ready_since: Optional[float] = None) -> Optional[Pace]:  # fmt: skip
    """:func:`pace` of one line from its jobs: ``finished`` (the latest :data:`RATE_JOBS`
    within :data:`RATE_LOOKBACK` count) and ``running`` (work until now)."""
    finished = [r for r in finished if r.finished_at is not None and now - RATE_LOOKBACK <= r.finished_at <= now]
    if not finished:
        return None
    finished = sorted(finished, key=lambda r: r.finished_at or 0.0)[-RATE_JOBS:]
    work = [(_ready(r), r.finished_at or now) for r in finished]
    work += [(_ready(r), now) for r in running]
    if ready_since is not None:
        work.append((ready_since, now))
    first = finished[0].finished_at or now
    if len(finished) > 1:
        # From the first finish on, the ones after it are what the line did.
        start, count = first, len(finished) - 1
    else:
        start, count = min(_ready(finished[0]), first), 1
    busy = max(_covered(work, start, now), 0.1)
    return Pace(count / busy, count, busy, now - start)


def predicted_waits(store: Storage, now: float, *, policy: str = "fair_share") -> dict[str, float]:
    """Seconds from ``now`` until each org's newest queued job is estimated to start
    (what :func:`explain` estimates for it, near enough), for every org with queued
    jobs that has a basis; in a few reads, whatever the number of orgs: the live
    counts, and the store's latest :data:`FLEET_RATE_JOBS` finished and running jobs.

    Each line (org and kind) moves at its :func:`pace` measured over its jobs among
    those; a line with none of them at a fair share of the whole queue's pace among
    the busy lines (under ``fair_share``). Under ``peek_set`` the whole queue ahead
    must drain too: the later of the two. An org's wait is its slowest line's.

    Not the per-job estimate in two ways, both to stay cheap: a busy line drowns a
    quiet one out of the store-wide sample (the quiet one is then given its fair
    share), and a line whose jobs wait with none of it running is measured up to its
    last finish (explain adds the waiting job's own wait to the line's work).
    """
    queued: dict[tuple[str, str], int] = {}
    active: set[tuple[str, str]] = set()
    for (org, kind, status), n in store.job_counts(live=True).items():
        if n and status is JobStatus.QUEUED:
            queued[(org, kind)] = queued.get((org, kind), 0) + n
        if n and status in (JobStatus.QUEUED, JobStatus.PROCESSING):
            active.add((org, kind))
    if not queued:
        return {}
    finished = [r for status in (JobStatus.COMPLETED, JobStatus.FAILED)
                for r in store.job_list(status=status, limit=FLEET_RATE_JOBS)]  # fmt: skip
    running = store.job_list(status=JobStatus.PROCESSING, limit=FLEET_RATE_JOBS)
    whole = _measure(sorted(finished, key=lambda r: r.finished_at or 0.0)[-FLEET_RATE_JOBS:], running, now)
    lines: dict[tuple[str, str], tuple[list[JobRecord], list[JobRecord]]] = {}
    for r in finished:
        lines.setdefault((r.org, r.kind), ([], []))[0].append(r)
    for r in running:
        lines.setdefault((r.org, r.kind), ([], []))[1].append(r)
    ahead_in_queue = sum(queued.values())
    waits: dict[str, float] = {}
    for (org, kind), n in queued.items():
        done, busy = lines.get((org, kind), ([], []))
        line = _measure(done, busy, now)
        options = []
        if line is not None:
            options.append(n / line.rate)
        elif whole is not None and policy == "fair_share":
            options.append(n / (whole.rate / max(len(active), 1)))
        if whole is not None and policy != "fair_share":
            options.append(ahead_in_queue / whole.rate)
        if options:
            waits[org] = max(waits.get(org, 0.0), *options)
    return waits


def _covered(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of ``[start, end]`` inside at least one of ``intervals``."""
    covered, reach = 0.0, start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in intervals):
        if b <= reach:
            continue
        covered += b - max(a, reach)
        reach = b
    return covered


def _ready(record: JobRecord) -> float:
    return max(record.created_at, record.run_at or record.created_at)


def _estimate(store: Storage, record: JobRecord, facts: WaitingFacts, now: float, *,
              fair: bool) -> tuple[Optional[float], Optional[str]]:  # fmt: skip
    """Jobs ahead divided by the rate they have been leaving at while there was work.

    Under ``peek_set`` (first come, first served within the peek set) both its line
    and the whole queue ahead must drain: the later of the two. Under
    ``fair_share`` only its line must: at its measured rate, or, with nothing of
    its line finished lately, at its fair share of the queue's rate.
    """
    if record.status is JobStatus.HOLDING:
        return None, "it holds in the flex queue until a running batch of its org ends"
    ready = _ready(record)
    line = pace(store, now, org=record.org, kind=record.kind, ready_since=ready)
    queue = pace(store, now, ready_since=ready) if not fair or line is None else None
    if line is None and queue is None:
        return None, f"nothing finished in the last {RATE_LOOKBACK / 60:g} minutes to measure a rate by"
    waits: list[tuple[float, str]] = []
    if line is not None:
        waits.append(((facts.ahead_in_line + 1) / line.rate, f"{facts.ahead_in_line} ahead in its line, which finished {line}"))
    if not fair and queue is not None:
        waits.append(((facts.ahead_in_queue + 1) / queue.rate, f"{facts.ahead_in_queue} ahead in the queue, which finished {queue}"))
    elif not waits and queue is not None:
        share = queue.rate / max(facts.active_lines, 1)
        waits.append(((facts.ahead_in_line + 1) / share, f"{facts.ahead_in_line} ahead in its line, at a fair share "
                                                         f"({share:.2f} jobs/s) of the queue's {queue} "
                                                         f"among {facts.active_lines} busy lines"))  # fmt: skip
    wait, why = max(waits)
    start = now + wait
    if record.run_at is not None and record.run_at > start:
        return record.run_at, f"its run-at time; {why}"
    return start, why


def _durations(record: JobRecord) -> dict[str, Optional[float]]:
    ready = max(record.created_at, record.run_at or record.created_at)
    # A retry's start may lead its run-at by the clock's grain: never a negative wait.
    waited = max(record.started_at - ready, 0.0) if record.started_at is not None else None
    ran = record.finished_at - record.started_at if record.finished_at is not None and record.started_at else None
    return {"waited": waited, "ran": ran}


def _finished(record: JobRecord) -> list[Reason]:
    d = _durations(record)
    parts = [f"{record.status.value} at {_when(record.finished_at)}"]
    if d["waited"] is not None:
        parts.append(f"after waiting {d['waited']:.3f} s")
    if d["ran"] is not None:
        parts.append(f"and running {d['ran']:.3f} s")
    reasons = [Reason("finished", " ".join(parts), dict(d))]
    if record.extended_status:
        reasons.append(Reason("finished", f"note: {record.extended_status}"))
    return reasons + _redelivered(record)


def _redelivered(record: JobRecord) -> list[Reason]:
    """Its earlier attempts: handler runs that raised (retries), and deliveries lost
    without an outcome (a worker that died, stalled or stopped)."""
    reasons = []
    failed = record.attempt_errors()
    if failed:
        last = failed[-1]
        reasons.append(Reason("retried", f"its handler raised {_count(len(failed), 'time')} "
                                         f"(last: {last.get('type')}: {last.get('message')})",
                              {"handler_attempts": record.handler_attempts, "failed_attempts": len(failed)}))  # fmt: skip
    running = record.status is JobStatus.PROCESSING
    lost = record.attempts - record.handler_attempts - running
    if lost > 0:
        reasons.append(Reason("redelivered", f"{_count(lost, 'delivery', 'deliveries')} ended without an outcome: "
                                             "a worker holding it died, stalled or stopped",
                              {"attempts": record.attempts, "lost": lost}))  # fmt: skip
    return reasons


def _count(n: int, one: str, many: Optional[str] = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _when(t: Optional[float]) -> str:
    return "—" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
