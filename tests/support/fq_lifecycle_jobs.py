"""Jobs for the lifecycle tests: retries, discarded jobs and results.

The store comes from ``FQ_STORE`` (a SQLite path or a PostgreSQL URL) so a test
and its worker processes share it; attempts are counted in ``FQ_EFFECTS`` (one
line per handler run, appended with O_APPEND) so they are seen across processes.
"""

from __future__ import annotations

import os
from typing import Any

import fairqueue as fq

# Quick back-off so a real worker retries within the test's patience; the delays
# still follow the policy (base 0.2 s, times 2 per attempt, jitter ±… of half).
POLICY = fq.RetryPolicy(max_attempts=3, base=0.2, factor=2.0, jitter=0.5)

app = fq.FairQueue(os.environ.get("FQ_STORE", ":memory:"), limits=fq.Limits(retry=POLICY))


def runs_so_far(key: str) -> int:
    """Handler runs recorded for ``key`` (this one included, once :func:`ran` was called)."""
    path = os.environ.get("FQ_EFFECTS")
    if not path or not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(line.strip() == key for line in f)


def ran(key: str) -> int:
    """Records a run of ``key``'s handler; returns how many there have been."""
    fd = os.open(os.environ["FQ_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{key}\n".encode())
    finally:
        os.close(fd)
    return runs_so_far(key)


@app.future
def flaky(key: str, failures: int) -> dict[str, Any]:
    """Raises ConnectionError ``failures`` times, then returns a result."""
    n = ran(key)
    if n <= failures:
        raise ConnectionError(f"{key}: flaky attempt {n}")
    return {"key": key, "attempt": n, "ctx_attempt": fq.current_context().attempt}


@app.future
def broken(key: str) -> None:
    ran(key)
    raise RuntimeError(f"{key}: broken every time")


@app.future(retry=fq.RetryPolicy(max_attempts=5, base=0.01, dont_retry_on=(ValueError,)))
def picky(key: str) -> None:
    ran(key)
    raise ValueError(f"{key}: bad input, retrying cannot help")


@app.future
def asks_again(key: str) -> None:
    ran(key)
    raise fq.Retry(after=0.05, reason=f"{key}: not ready")


@app.future
def unjsonable() -> object:
    return object()


class Report(fq.Queueable):
    retry = fq.RetryPolicy(max_attempts=2, base=0.01)

    def __init__(self, key: str) -> None:
        self.key = key

    def execute(self, ctx: fq.Context) -> list[int]:
        if ran(self.key) == 1:
            raise TimeoutError("the first try times out")
        return [1, 2, 3]
