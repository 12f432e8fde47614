"""The app of the SIGKILL soak (benches/soak_sigkill.py and its CI-sized test).

``FQ_SOAK_STORE`` is the store (a SQLite path or a ``postgresql://`` URL);
``FQ_SOAK_CAP`` the per-(org, kind) cap, small so that the cap slots a killed
worker's jobs hold matter (``none``: no cap, fair_share's default, under which the
embedded store's workers take their turns in native code); ``FQ_SOAK_SLOTS`` the slots per worker. Each run of
:func:`work` appends ``"<job id> <pid> <wall time>"`` to ``FQ_EFFECTS`` before it sleeps (one
``write`` with O_APPEND: a line is whole even when its process is SIGKILLed), so a
job whose run was cut short by a kill still shows that it ran.
"""

from __future__ import annotations

import os
import time
from typing import Optional

import fairqueue as fq


def _cap() -> Optional[int]:
    cap = os.environ.get("FQ_SOAK_CAP", "2")
    return None if cap == "none" else int(cap)


app = fq.FairQueue(
    os.environ.get("FQ_SOAK_STORE", ":memory:"),
    limits=fq.Limits(slots=int(os.environ.get("FQ_SOAK_SLOTS", "8")), cap=_cap()),
)


@app.future
def work(ms: float) -> None:
    """Records its run outside the store, then sleeps ``ms`` milliseconds."""
    fd = os.open(os.environ["FQ_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{fq.current_context().job_id} {os.getpid()} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    time.sleep(ms / 1000)
