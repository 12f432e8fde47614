"""Jobs for the process-mode tests (tests/integration/test_process_mode.py).

The app's store comes from ``FQ_STORE`` so a test and its worker subprocesses share
one SQLite file. ``FQ_IMPORT_DELAY`` (seconds) makes importing this module slow, as
a heavy app is, so a process slot's child starts cold. ``slow_effect`` appends its
job id to ``FQ_STARTS`` when it starts and to ``FQ_EFFECTS`` when it ends (its side
effect, written last, with O_APPEND so lines from several processes never
interleave); ``FQ_SLEEP_CAP`` caps its sleep, for a second run that drains quickly.
"""

from __future__ import annotations

import os
import time

import fairqueue as fq

time.sleep(float(os.environ.get("FQ_IMPORT_DELAY", "0")))

app = fq.FairQueue(
    os.environ.get("FQ_STORE", ":memory:"),
    limits=fq.Limits(slots=4, cap=12, timeouts={"future": 60.0, "queueable": 60.0, "batch": 60.0, "scheduled": 60.0}),
)


def _append(variable: str, line: str) -> None:
    path = os.environ.get(variable)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


@app.future
def slow_effect(seconds: float) -> None:
    """Sleeps, then records its side effect: a job stopped mid-sleep has none."""
    job_id = fq.current_context().job_id
    _append("FQ_STARTS", str(job_id))
    time.sleep(min(seconds, float(os.environ.get("FQ_SLEEP_CAP", "inf"))))
    _append("FQ_EFFECTS", str(job_id))


@app.future(timeout=2)
def quick() -> None:
    """A 10 ms job with a 2 s timeout, less than a cold child's start-up."""
    time.sleep(0.01)
