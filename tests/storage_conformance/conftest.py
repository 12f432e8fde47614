"""Runs every conformance test against every storage backend (the PostgreSQL
fixtures ``pg_dsn`` and ``pg_schema`` are suite-wide, in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
    elif request.param == "sqlite":
        backend = SQLiteStorage(tmp_path / "fq.db")
    else:
        from fairqueue.storage.postgres import PostgresStorage

        backend = PostgresStorage(request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema"))
    with backend:
        yield backend


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The backends several worker processes share (the in-memory store lives in one process)."""
    backend: Storage
    if request.param == "sqlite":
        backend = SQLiteStorage(tmp_path / "fq.db")
    else:
        from fairqueue.storage.postgres import PostgresStorage

        backend = PostgresStorage(request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema"))
    with backend:
        yield backend
