"""The app of the PostgreSQL outage test: its store is the test's private server.

``FQ_PG_DSN`` and ``FQ_PG_SCHEMA`` name the store; ``FQ_CONNECT_TIMEOUT`` is the
store's wait for a connection (a short one, so an outage outlasts it in seconds).
Each run of :func:`touch` appends ``"<job id> <pid> <wall time>"`` to
``FQ_EFFECTS`` (O_APPEND: lines of several processes never interleave), a side
effect outside the database, so it is seen even when the database loses track.
"""

from __future__ import annotations

import os
import time

import fairqueue as fq
from fairqueue.storage.interface import Storage
from fairqueue.storage.memory import MemoryStorage


def _store() -> Storage:
    dsn = os.environ.get("FQ_PG_DSN")
    if not dsn:
        return MemoryStorage()  # imported by the test process, which sets its own store
    from fairqueue.storage.postgres import PostgresStorage

    return PostgresStorage(
        dsn, schema=os.environ.get("FQ_PG_SCHEMA", "fairqueue"), connect_timeout=float(os.environ.get("FQ_CONNECT_TIMEOUT", "10"))
    )


app = fq.FairQueue(_store(), limits=fq.Limits(slots=4, cap=int(os.environ.get("FQ_CAP", "4"))))


@app.future
def touch(seconds: float) -> None:
    """Records its run outside the database, then takes ``seconds``."""
    line = f"{fq.current_context().job_id} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(os.environ["FQ_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
