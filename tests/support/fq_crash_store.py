"""An app whose store fails for good after a few loop turns, as a full disk does, so
a real worker process's loop crashes (the exit-code test)."""

from __future__ import annotations

import os
from typing import Any

import fairqueue as fq
from fairqueue.errors import StorageError
from fairqueue.storage.memory import MemoryStorage


class FailingStore(MemoryStorage):
    """Fails every outcome commit after the first ``after`` ones."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def job_finish_and_claim(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.after:
            raise StorageError("database or disk is full")
        return super().job_finish_and_claim(*args, **kwargs)


app = fq.FairQueue(FailingStore(int(os.environ.get("FQ_FAIL_AFTER", "3"))))


@app.future
def noop() -> None:
    """Does nothing."""


noop.delay_many("org-1", [() for _ in range(50)])
