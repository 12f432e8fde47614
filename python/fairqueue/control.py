"""Reading and steering jobs that exist: records, listings, aborts, flex-queue
moves, schedules and daily usage — each argument checked once, here.

A :class:`Control` serves the app facade, its org-scoped views and the
dashboard alike; with ``org`` given, an operation sees and touches only that
org's jobs and reports another org's ids as unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Optional, Union

from fairqueue.errors import InvalidArgument
from fairqueue.observe import Explanation, explain
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, TriggerRecord, TriggerState
from fairqueue.settings import QueueSettings
from fairqueue.storage import LIVE_STATUSES, RERUNNABLE, DailyUsage, Storage
from fairqueue.validate import check_enum, check_id, check_kind, check_limit, check_org, shown

__all__ = ["Control"]


# Jobs read per page when selecting by filter.
_PAGE = 500


def _epoch(name: str, value: Optional[datetime]) -> Optional[float]:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected an aware datetime (with a time zone)")
    return value.timestamp()


def _statuses(given: Union[None, str, JobStatus, Sequence[Union[str, JobStatus]]], allowed: Sequence[JobStatus],
              operation: str) -> list[JobStatus]:  # fmt: skip
    """``given`` (one status or several; None: all of ``allowed``) as statuses, each one of ``allowed``."""
    if given is None:
        return list(allowed)
    names = [given] if isinstance(given, (str, JobStatus)) else list(given)
    statuses = [s for s in (check_enum(JobStatus, "status", n) for n in names) if s is not None]
    wrong = [s for s in statuses if s not in allowed]
    if wrong:
        raise InvalidArgument(
            f"invalid status {wrong[0].value!r} for {operation}: expected {', '.join(s.value for s in allowed)}"
        )
    return statuses


def _unknown(what: str, item_id: int, org: Optional[str]) -> LookupError:
    return LookupError(f"org {org!r} has no {what} with id {item_id}" if org else f"no {what} with id {item_id}")


class Control:
    """Operations on existing jobs and schedules.

    Args:
        store: returns the store to act on (the app's current one).
        settings: the queue's settings (explanations read them).
    """

    def __init__(self, store: Callable[[], Storage], settings: QueueSettings) -> None:
        self.store = store
        self.settings = settings

    def get(self, job_id: int, *, org: Optional[str] = None) -> Optional[JobRecord]:
        """The record of ``job_id`` (if it is ``org``'s, when given), or None."""
        record = self.store().job_get(check_id("job id", job_id))
        return record if record is not None and (org is None or record.org == org) else None

    def jobs(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Union[None, str, JobStatus] = None,
        limit: int = 100,
        before_id: Optional[int] = None,
    ) -> list[JobRecord]:
        """Job records, newest first, filtered by org, kind and status."""
        if org is not None:
            check_org(org)
        if kind is not None:
            check_kind(kind)
        wanted = check_enum(JobStatus, "status", status)
        check_limit(limit)
        if before_id is not None:
            check_id("before_id", before_id)
        return self.store().job_list(org=org, kind=kind, status=wanted, before_id=before_id, limit=limit)

    def abort(self, job_id: int, *, org: Optional[str] = None) -> JobStatus:
        """Aborts a job: a queued job never runs; a running one sees ``ctx.cancelled``.

        Returns the status after the call; raises LookupError for an unknown id.
        """
        status = self.store().job_abort(check_id("job id", job_id), time.time(), org=org)
        if status is None:
            raise _unknown("job", job_id, org)
        return status

    def retry(self, job_id: int, *, org: Optional[str] = None) -> JobStatus:
        """Queues a failed, discarded or aborted job again (see :meth:`Storage.job_rerun`);
        returns its new status. LookupError for an unknown id, InvalidArgument for a
        job in another status."""
        record = self.get(job_id, org=org)
        if record is None:
            raise _unknown("job", job_id, org)
        if not self.store().job_rerun([record.id], time.time(), org=org):
            raise InvalidArgument(
                f"job {job_id} is {record.status.value}: only {', '.join(s.value for s in RERUNNABLE)} jobs that are "
                "not batches can be re-run, and none while a live job holds its duplicate signature"
            )
        return JobStatus.QUEUED

    def select(
        self,
        statuses: Sequence[JobStatus],
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        handler: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
    ) -> Iterator[list[int]]:
        """The ids of the jobs in ``statuses`` matching every filter (created from
        ``since`` until ``until``), a page at a time, newest first."""
        if org is not None:
            check_org(org)
        if kind is not None:
            check_kind(kind)
        if handler is not None and not isinstance(handler, str):
            raise InvalidArgument(f"invalid handler {shown(handler)}: expected a 'module:name' import path")
        low, high = (_epoch(name, value) for name, value in (("since", since), ("until", until)))
        store = self.store()
        for status in statuses:
            before: Optional[int] = None
            while True:
                page = store.job_list(org=org, kind=kind, status=status, before_id=before, limit=_PAGE)
                if not page:
                    break
                yield [r.id for r in page if (handler is None or r.handler == handler)
                       and (low is None or r.created_at >= low) and (high is None or r.created_at < high)]  # fmt: skip
                if len(page) < _PAGE or (low is not None and page[-1].created_at < low):
                    break  # newest first: past ``since`` nothing older matches
                before = page[-1].id

    def retry_jobs(self, status: Union[None, str, JobStatus, Sequence[Union[str, JobStatus]]] = None, *,
                   org: Optional[str] = None, **filters: Any) -> list[int]:  # fmt: skip
        """Queues again every failed, discarded or aborted job (those of ``status``
        only, if given) matching the filters (see :meth:`select`); returns their ids."""
        statuses = _statuses(status, RERUNNABLE, "retry_jobs")
        store, queued = self.store(), []
        for ids in self.select(statuses, org=org, **filters):
            queued += store.job_rerun(ids, time.time(), org=org) if ids else []
        return sorted(queued)

    def abort_jobs(self, status: Union[None, str, JobStatus, Sequence[Union[str, JobStatus]]] = None, *,
                   org: Optional[str] = None, **filters: Any) -> dict[int, JobStatus]:  # fmt: skip
        """Aborts every holding, queued or processing job (those of ``status`` only, if
        given) matching the filters (see :meth:`select`): waiting ones never run, running
        ones see their cancel flag. Returns each job's status after the call."""
        statuses = _statuses(status, LIVE_STATUSES, "abort_jobs")
        store, now, done = self.store(), time.time(), {}
        for ids in self.select(statuses, org=org, **filters):
            for job_id in ids:
                after = store.job_abort(job_id, now, org=org)
                if after is not None:
                    done[job_id] = after
        return dict(sorted(done.items()))

    def explain(self, job_id: int, *, org: Optional[str] = None) -> Explanation:
        """Why ``job_id`` waits (see :func:`fairqueue.observe.explain`); LookupError if unknown."""
        if org is not None and self.get(job_id, org=org) is None:
            raise _unknown("job", job_id, org)
        return explain(self.store(), self.settings, check_id("job id", job_id))

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """The error events of batch ``job_id``, oldest first."""
        return self.store().batch_errors(check_id("job id", job_id))

    # ----- the flex queue ----------------------------------------------------------------

    def flex_queue(self, org: str) -> list[JobRecord]:
        """``org``'s holding batch jobs, the next to start first."""
        return self.store().flex_list(check_org(org))

    def flex_move(
        self,
        job_id: int,
        *,
        org: Optional[str] = None,
        before: Optional[int] = None,
        after: Optional[int] = None,
        to: Optional[str] = None,
    ) -> list[int]:
        """Moves a holding batch in its org's flex queue (before or after another, or
        ``to="front"`` / ``"end"``); returns the new order."""
        for other in (before, after):
            if other is not None:
                check_id("job id", other)
        if to not in (None, "front", "end"):
            raise InvalidArgument(f"invalid to {shown(to)}: expected 'front' or 'end'")
        record = self.get(job_id, org=org)
        if record is None:
            raise LookupError(f"no job with id {job_id}" + (f" for org {org!r}" if org else ""))
        return self.store().flex_move(job_id, record.org, before=before, after=after, to=to)

    # ----- schedules and usage --------------------------------------------------------------

    def schedules(self, *, org: Optional[str] = None, state: Union[None, str, TriggerState] = None) -> list[TriggerRecord]:
        """Schedules (optionally one org's, in one state), oldest first."""
        if org is not None:
            check_org(org)
        return self.store().trigger_list(org=org, state=check_enum(TriggerState, "schedule state", state))

    def unschedule(self, trigger_id: int, *, org: Optional[str] = None) -> TriggerState:
        """Aborts a schedule: it never fires again. Returns the state it was in."""
        state = self.store().trigger_abort(check_id("schedule id", trigger_id), org=org)
        if state is None:
            raise _unknown("schedule", trigger_id, org)
        return state

    def daily_usage(self, org: str) -> DailyUsage:
        """``org``'s async executions counted in the rolling 24 hours, and when the oldest leave."""
        return self.store().usage_daily(check_org(org), time.time())
