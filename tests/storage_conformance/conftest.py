"""Runs every conformance test against every storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend: Storage = MemoryStorage() if request.param == "memory" else SQLiteStorage(tmp_path / "fq.db")
    with backend:
        yield backend
