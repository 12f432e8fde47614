"""Retry policies: what becomes of a job whose handler raised.

A policy is set as the app's default (``FairQueue(retry=…)``), per job kind
(``Limits(retry={"future": …})``) and per handler (``@app.future(retry=…)``, or a
``retry`` class attribute on a Queueable or Batchable); the most specific one
applies. An exception the policy retries re-queues the job at ``now +
delay(attempt)`` until ``max_attempts`` handler attempts have run; then the job is
**discarded** (``JobStatus.DISCARDED``: given up on after its retries, with its last
error). An exception it does not retry fails the job at once (``failed``).

Handler attempts count only runs of the handler that ended (it returned, raised,
or asked for a :class:`~fairqueue.jobs.Retry`); a delivery lost to a dead or
stopping worker is not one of them.

The default, 3 attempts with jittered exponential back-off from 1 s (about 1 s,
then 4 s, each drawn from its upper half): most transient failures — a
connection reset, a deadlock, a rate-limited API — clear within seconds, so two
quick retries absorb them, while a real bug is discarded and visible within
seconds instead of being retried for hours (Sidekiq's 25 retries over 20 days
hide it; teams that want that set ``max_attempts`` and ``max_delay`` higher).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from fairqueue.errors import HandlerNotFound, InvalidArgument, LimitExceeded, MalformedRecord
from fairqueue.validate import MAX_SECONDS, check_int, check_number, shown

__all__ = ["BACKOFFS", "DEFAULT_RETRY", "MAX_ATTEMPTS", "NO_RETRY", "PERMANENT_ERRORS", "RetryPolicy"]

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (InvalidArgument, LimitExceeded, HandlerNotFound, MalformedRecord)
"""Errors no policy retries: fairqueue refused what the handler asked, and would again."""

BACKOFFS = ("exponential", "linear", "constant")
"""How the delay grows with the attempt: ``base * factor ** (n - 1)``, ``base * n``, ``base``."""

MAX_ATTEMPTS = 100
"""The most handler attempts a policy may allow (each attempt's error is kept on the record)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a job's handler runs at most, and how long to wait between runs.

    Args:
        max_attempts: handler attempts in all, the first included (1: never retry).
        backoff: ``"exponential"``, ``"linear"`` or ``"constant"`` (see :data:`BACKOFFS`).
        base: seconds before the first retry (before jitter).
        factor: the growth per attempt of an exponential back-off.
        max_delay: the longest wait between two attempts, in seconds.
        jitter: the fraction of each delay drawn at random (0: exact delays; 0.5: each
            from its upper half), so that jobs that failed together do not retry together.
        retry_on: exception types retried (default: every ``Exception``).
        dont_retry_on: exception types never retried, even if ``retry_on`` matches
            (the job fails at once).

    Raises:
        InvalidArgument: a value out of range or of the wrong type (the message names it).
    """

    max_attempts: int = 3
    backoff: str = "exponential"
    base: float = 1.0
    factor: float = 4.0
    max_delay: float = 300.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)
        if self.backoff not in BACKOFFS:
            raise InvalidArgument(f"invalid backoff {shown(self.backoff)}: expected one of {', '.join(BACKOFFS)}")
        check_number("base", self.base, most=MAX_SECONDS)
        check_number("factor", self.factor, least=1.0, most=1000.0)
        check_number("max_delay", self.max_delay, most=MAX_SECONDS)
        check_number("jitter", self.jitter, most=1.0)
        for name in ("retry_on", "dont_retry_on"):
            types = getattr(self, name)
            if isinstance(types, type):
                types = (types,)
                object.__setattr__(self, name, types)
            if not isinstance(types, tuple) or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
                raise InvalidArgument(f"invalid {name} {shown(types)}: expected a tuple of exception classes")

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` is one this policy retries (attempts left aside).

        fairqueue's own refusals (:data:`PERMANENT_ERRORS`: an enqueue past a limit,
        a bad argument, a handler that cannot be found, a malformed record) are never
        retried: the same call would be refused again."""
        if isinstance(error, PERMANENT_ERRORS):
            return False
        return isinstance(error, self.retry_on) and not isinstance(error, self.dont_retry_on)

    def delay(self, attempt: int, draw: Optional[random.Random] = None) -> float:
        """Seconds to wait after handler attempt ``attempt`` (1 for the first) failed."""
        if self.backoff == "exponential":
            full = self.base * self.factor ** min(attempt - 1, 64)
        elif self.backoff == "linear":
            full = self.base * attempt
        else:
            full = self.base
        full = min(full, self.max_delay)
        return full * (1 - self.jitter * (draw or random).random())


DEFAULT_RETRY = RetryPolicy()
"""The policy of an app that sets none (see the module docstring for why)."""

NO_RETRY = RetryPolicy(max_attempts=1)
"""Never retry: the first exception fails the job (the behaviour before policies)."""
