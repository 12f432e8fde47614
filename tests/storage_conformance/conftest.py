"""Runs every conformance test against every storage backend (the PostgreSQL
fixtures ``pg_dsn`` and ``pg_schema`` are suite-wide, in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


def _open(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "memory":
        return MemoryStorage()
    if request.param == "sqlite":
        return SQLiteStorage(tmp_path / "fq.db")
    from fairqueue.storage.postgres import PostgresStorage

    return PostgresStorage(request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    with _open(request, tmp_path) as backend:
        yield backend


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The backends several worker processes share (the in-memory store lives in one process)."""
    with _open(request, tmp_path) as backend:
        yield backend
