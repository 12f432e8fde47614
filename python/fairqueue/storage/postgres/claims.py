"""The worker's side of the PostgreSQL store: pending jobs, claims, outcomes, heartbeats, re-deliveries.

Claims (and the outcomes a turn commits with its claim) wait for the WAL flush,
so a delivery is on disk before its handler starts; heartbeats, outcomes alone and
re-deliveries do not (``durable=False``; see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from fairqueue.errors import LimitExceeded
from fairqueue.records import Admission, Candidate, Claimed, Finish, JobRecord, JobStatus, PendingJob, RateScope
from fairqueue.storage.interface import Held, admit, capped_scopes, check_finishes, rate_scope_text, rate_scopes

from . import completions, flex, jobs, usage
from .connection import LOCK_CAP, LOCK_PUBLISH, LOCK_SETTINGS, Cursor, Database
from .rows import floats, record

__all__ = [
    "applied_final",
    "claim",
    "claim_in",
    "finish",
    "finish_and_claim",
    "heartbeat",
    "insert_children",
    "pending",
    "processing_held",
    "publish",
    "requeue_expired",
    "send_final",
    "stand_ins",
]


def publish(db: Database, cur: Cursor) -> None:
    """Numbers committed provisional rows from ``fq_ready_seq``, in provisional order.

    Publishers take turns on an advisory lock held until their commit, so each
    draws numbers only after the previous one's are visible (package docstring).
    """
    db.lock_schema(cur, LOCK_PUBLISH)
    # A new statement, a new snapshot: what the previous publisher did is visible now.
    cur.execute(db.sql["pending_to_publish"])
    ids = [r[0] for r in cur.fetchall()]
    if not ids:
        return
    cur.execute(db.sql["pending_reserve_seqs"], (len(ids),))
    last = cur.fetchone()
    assert last is not None
    first = int(last[0]) - len(ids) + 1
    cur.execute(db.sql["pending_publish"], (ids, list(range(first, first + len(ids)))))


def pending(db: Database, after_seq: int, limit: Optional[int], queues: Optional[Sequence[str]]) -> list[PendingJob]:
    """See :meth:`Storage.job_pending`.

    First takes the horizon (``pending_horizon``): the last ``ready_seq`` drawn once
    every enqueue drawing under the publish lock has ended, and publishes the jobs
    queued provisionally by transactions committed since anyone last looked (gives
    them their ``ready_seq``, in a short transaction of its own); then reads up to
    the horizon only, so a job whose enqueue commits late still comes after the
    largest ``ready_seq`` any reader has seen (the package docstring).
    """
    [(horizon, unpublished)] = db.read(db.sql["pending_horizon"], (LOCK_PUBLISH, db.schema))
    if unpublished:
        db.transaction(lambda cur: publish(db, cur))
        [(horizon, _)] = db.read(db.sql["pending_horizon"], (LOCK_PUBLISH, db.schema))
    chosen = None if queues is None else list(queues)
    rows = db.read(db.sql["pending_read"], (max(after_seq, 0), int(horizon), chosen, chosen, limit))
    return [PendingJob(*r) for r in rows]


def claim(
    db: Database, job_ids: Sequence[int], worker: str, lease_until: float, now: float, admission: Optional[Admission]
) -> Claimed:
    """See :meth:`Storage.job_claim`. Safe against any number of concurrent claimers on any host.

    One transaction (:func:`claim_in`): the asked-for rows still queued are locked
    (stand-ins found for those gone); then, if the admission names a settings
    version, the settings lock is taken shared and the version compared (see
    :mod:`.settings`); then a transaction-scoped advisory lock is taken per org
    whose caps or rate limits the candidates fall under, in one global order;
    then those orgs' processing jobs are counted, their rate limits' states read,
    and what :func:`~fairqueue.storage.interface.admit` lets in is claimed, with
    the states it moved. Every claim of an org, on every host, takes its turn
    between count and commit, so no count or state can go stale: a cap holds at
    every instant and a rate limit over every window. Leaving processing
    (outcomes, re-deliveries) only lowers a count and needs no lock.
    """
    if not job_ids:
        return Claimed()
    return db.transaction(
        lambda cur: claim_in(db, cur, list(job_ids), worker, lease_until, now, admission), durable=True, pipeline=True
    )


def claim_in(
    db: Database,
    cur: Cursor,
    asked: list[int],
    worker: str,
    lease_until: float,
    now: float,
    admission: Optional[Admission],
) -> Claimed:
    """The claim of :func:`claim`, in the transaction of ``cur``."""
    # The still-queued asked-for jobs, locked in id order (see claim_lock_asked).
    cur.execute(db.sql["claim_lock_asked"], (asked,))
    order = {job_id: n for n, job_id in enumerate(asked)}
    candidates = sorted((Candidate(*row) for row in cur.fetchall()), key=lambda c: order[c.id])
    if len(candidates) < len(asked):
        candidates += stand_ins(db, cur, asked, {c.id for c in candidates}, now)
    if admission is None:
        admission = _UNLIMITED
    pairs, orgs, keys = capped_scopes(candidates, admission)
    rated = sorted(rate_scopes(candidates, admission))
    counted = sorted({org for org, _ in pairs} | orgs | {org for org, _ in keys})
    locked = sorted(set(counted) | {scope[0] for scope in rated})
    checked = admission.version is not None
    # Everything below goes out in one round trip (a pipeline), read only once all is sent.
    if checked:
        # After the row locks (nothing holding the settings lock waits for a row),
        # before the orgs' locks; a new statement, a new snapshot.
        cur.execute(db.sql["claim_lock_settings"], (LOCK_SETTINGS, db.schema))
    version = cur.connection.cursor() if checked else None
    if version is not None:
        version.execute(db.sql["claim_settings_version"])
    held = Held()
    tats: dict[RateScope, float] = {}
    if locked:
        # One advisory lock per org, in one global order, taken after the row locks
        # and held to commit: every claim of an org takes its turn between count and
        # commit. A new statement, a new snapshot: the counts and states include every
        # claim committed before our locks.
        db.lock_orgs(cur, LOCK_CAP, locked)
        counts = cur.connection.cursor() if counted else None
        if counts is not None:
            counts.execute(db.sql["claim_count_processing"], (counted,))
        states = cur.connection.cursor() if rated else None
        if states is not None:
            states.execute(db.sql["claim_rate_state"], ([rate_scope_text(s) for s in rated],))
        if version is not None and _version(version) != admission.version:
            return Claimed(stale=True)
        if counts is not None:
            held = processing_held(counts.fetchall(), pairs, orgs, keys)
        if states is not None:
            by_text = {rate_scope_text(s): s for s in rated}
            tats = {by_text[text]: float(tat) for text, tat in states.fetchall()}
        version = None  # checked
    admitted = admit(candidates, held, tats, admission, now)
    if admitted.tats:
        moved = sorted(admitted.tats)
        cur.execute(db.sql["claim_rate_store"], ([rate_scope_text(s) for s in moved], [float(admitted.tats[s]) for s in moved]))
    claimed: list[JobRecord] = []
    if admitted.ids:
        params: tuple[object, ...] = (worker, float(lease_until), float(now), admitted.ids)
        if version is not None:  # checked by the take itself: no round trip of its own
            cur.execute(db.sql["claim_take_at_version"], (*params, admission.version))
        else:
            cur.execute(db.sql["claim_take"], params)
        rank = {job_id: n for n, job_id in enumerate(admitted.ids)}
        claimed = sorted((record(r) for r in cur.fetchall()), key=lambda r: rank[r.id])
    if version is not None and _version(version) != admission.version:
        return Claimed(stale=True)
    return Claimed(
        claimed,
        [job_id for job_id in admitted.at_cap if job_id in order],
        {job_id: at for job_id, at in admitted.rate_limited.items() if job_id in order},
        paused=[job_id for job_id in admitted.paused if job_id in order],
    )


_UNLIMITED = Admission()


def _version(cur: Cursor) -> int:
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def processing_held(
    rows: Sequence[tuple[Any, ...]],
    pairs: set[tuple[str, str]],
    orgs: set[str],
    keys: set[tuple[str, Optional[str]]],
) -> Held:
    """The :class:`Held` counts of the capped scopes, from ``claim_count_processing``'s rows."""
    held = Held()
    for org, kind, key, n in rows:
        if (org, kind) in pairs:
            held.pairs[(org, kind)] = held.pairs.get((org, kind), 0) + int(n)
        if org in orgs:
            held.orgs[org] = held.orgs.get(org, 0) + int(n)
        if (org, key) in keys:
            held.keys[(org, key)] = held.keys.get((org, key), 0) + int(n)
    return held


def stand_ins(db: Database, cur: Cursor, asked: list[int], queued: set[int], now: float) -> list[Candidate]:
    """For each asked job another claimer took meanwhile, the oldest ready queued job
    of its org, kind, key and queue that was not asked for, skipping rows other
    claimers hold locked (see :meth:`Storage.job_claim`). One statement: while
    several workers race for the same jobs, most of a claim's jobs are stand-ins,
    for many lines."""
    cur.execute(db.sql["claim_stand_ins"], ([i for i in asked if i not in queued], float(now), asked))
    return [Candidate(*row) for row in cur.fetchall()]


def heartbeat(db: Database, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
    """See :meth:`Storage.job_heartbeat`."""
    if not job_ids:
        return

    def body(cur: Cursor) -> None:
        cur.execute(db.sql["heartbeat"], (float(lease_until), list(job_ids), worker))

    db.transaction(body, durable=False)


def send_final(db: Database, cur: Cursor, final: Sequence[Finish]) -> None:
    """Stores completed and failed outcomes (no children, no progress) in one
    statement; :func:`applied_final` reads what it did."""
    cur.execute(
        db.sql["finish_final"],
        (
            [f.job_id for f in final],
            [f.worker for f in final],
            [f.status.value for f in final],
            floats(f.at for f in final),
            [f.error for f in final],
            [f.result for f in final],
            [f.ran for f in final],
            [f.attempt_error for f in final],
        ),
    )
    completions.notify(db, cur, [f.job_id for f in final])  # waiters wake at commit (fairqueue.storage.waiting)


def applied_final(cur: Cursor, ended_batches: list[str]) -> list[int]:
    """The ids :func:`send_final`'s statement applied to; notes the orgs whose batch ended."""
    applied: list[int] = []
    for job_id, kind, org in cur.fetchall():
        applied.append(job_id)
        if kind == "batch":
            ended_batches.append(org)
    return applied


def finish(db: Database, finishes: Sequence[Finish]) -> list[int]:
    """See :meth:`Storage.job_finish`: all outcomes and their children in one transaction."""
    check_finishes(finishes)
    if not finishes:
        return []
    final = [f for f in finishes if f.status is not JobStatus.QUEUED]
    retried = [f for f in finishes if f.status is JobStatus.QUEUED]

    ended_batches: list[str] = []  # orgs whose batch ended: their next holding one may start

    def body(cur: Cursor) -> list[int]:
        applied: list[int] = []
        ended_batches.clear()
        if final:
            send_final(db, cur, final)
            applied += applied_final(cur, ended_batches)
        if retried:
            cur.execute(
                db.sql["finish_retry"],
                (
                    [f.job_id for f in retried],
                    [f.worker for f in retried],
                    floats(f.retry_at for f in retried),
                    [f.error for f in retried],
                    [f.given_back for f in retried],
                    [f.ran for f in retried],
                    [f.attempt_error for f in retried],
                ),
            )
            applied.extend(r[0] for r in cur.fetchall())
            if cur.rowcount:
                db.notify(cur)
        done = set(applied)
        for f in finishes:
            if f.progress is not None and f.job_id in done:
                flex.record_progress(db, cur, f)
            if f.children and f.job_id in done:
                insert_children(db, cur, f)
        return applied

    # The bulk (final outcomes, no children) is one statement: its own transaction.
    simple = not retried and not any(f.children or f.progress for f in finishes)
    done = set(db.transaction(body, durable=False, block=not simple))
    if ended_batches:
        # Its own transaction, so the common outcome stays one statement; after a
        # crash in between, requeue_expired's sweep promotes instead.
        db.transaction(lambda cur: flex.promote(db, cur, ended_batches))
    return [f.job_id for f in finishes if f.job_id in done]


def finish_and_claim(
    db: Database,
    finishes: Sequence[Finish],
    job_ids: Sequence[int],
    worker: str,
    lease_until: float,
    now: float,
    admission: Optional[Admission],
) -> tuple[list[int], Claimed]:
    """See :meth:`Storage.job_finish_and_claim`: plain outcomes and the claim share
    one transaction (one commit); outcomes with children, retries or batch
    progress take :func:`finish`'s own path first."""
    check_finishes(finishes)
    plain = [f for f in finishes if f.status is not JobStatus.QUEUED and not f.children and f.progress is None]
    if len(plain) < len(finishes) or not job_ids:
        applied = finish(db, finishes) if finishes else []
        return applied, claim(db, job_ids, worker, lease_until, now, admission) if job_ids else Claimed()
    ended_batches: list[str] = []

    def body(cur: Cursor) -> tuple[list[int], Claimed]:
        # The outcomes go out first (the slots they free count for the claim's caps);
        # their result arrives with the claim's first one, in the same round trip.
        with cur.connection.cursor() as outcomes:
            if plain:
                send_final(db, outcomes, plain)
            claimed = claim_in(db, cur, list(job_ids), worker, lease_until, now, admission)
            ended_batches[:] = []
            return applied_final(outcomes, ended_batches) if plain else [], claimed

    applied, claimed = db.transaction(body, durable=True, pipeline=True)
    if ended_batches:
        db.transaction(lambda cur: flex.promote(db, cur, ended_batches))
    done = set(applied)
    return [f.job_id for f in finishes if f.job_id in done], claimed


def insert_children(db: Database, cur: Cursor, f: Finish) -> None:
    """Stores the children of outcome ``f`` (it applied), or notes in the parent why not."""
    # ON CONFLICT … DO NOTHING rather than check-then-insert: a concurrent enqueue
    # of the same signature cannot abort the whole group commit.
    try:
        if f.daily_limits:
            usage.check_limits(db, cur, f.children, f.daily_limits, f.at)
        stored = jobs.insert_rows(db, cur, f.children, f.at, skip_taken=True)
    except LimitExceeded as e:  # past the daily limit, or a batch child past a full flex queue
        cur.execute(db.sql["finish_note"], (f"children not enqueued: {e}", f.job_id))
        return
    taken = jobs.missing(f.children, [r[1] for r in stored])
    if taken:
        cur.execute(
            db.sql["finish_note"],
            (f"child not enqueued: duplicate signature {taken!r} already queued or running", f.job_id),
        )


def requeue_expired(db: Database, now: float) -> list[int]:
    """See :meth:`Storage.job_requeue_expired`. Concurrent callers requeue each job once."""

    def body(cur: Cursor) -> list[int]:
        # A row whose owner is finishing or heartbeating it right now is waited
        # for and re-checked: a fresh lease or an outcome leaves it alone.
        cur.execute(db.sql["requeue_expired"], (float(now),))
        expired = sorted(r[0] for r in cur.fetchall())
        if expired:
            db.notify(cur)
        # A batch's outcome and the promotion it allows commit apart (finish): a
        # crash in between would leave the org's flex queue waiting for an event
        # that may never come. Each worker's sweep starts what has room.
        flex.promote_stalled(db, cur)
        return expired

    return db.transaction(body, durable=False)
