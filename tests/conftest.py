"""Suite-wide settings: hypothesis profiles, a guard that the installed package is
tested, and the PostgreSQL fixtures.

PostgreSQL tests need a server: ``FAIRQUEUE_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each test gets a fresh schema
with a unique name, dropped afterwards. If the server cannot be reached the
PostgreSQL tests are skipped with the reason, except under ``CI=true``, where
they fail: CI must never pass by skipping the database it is meant to test.

CI installs the wheel (``pip install ".[test]"``) and runs pytest from the clone
root; the source tree's ``python/`` directory is never on ``sys.path``, so
``import fairqueue`` must resolve to the installed package with its compiled
``_core``. Under ``CI`` the guard below makes a mix-up fail loudly instead of
testing whatever happens to sit in the source tree (``maturin develop`` puts a
build there, which is fine on a developer's machine).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import HealthCheck, settings

import fairqueue

# Two cores and a shared machine: wall-clock deadlines would only add flakiness.
settings.register_profile("default", deadline=None, max_examples=200)
settings.register_profile(
    "ci", deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")

_SOURCE_TREE = (Path(__file__).resolve().parent.parent / "python").resolve()
if os.environ.get("CI") and Path(fairqueue.__file__).resolve().is_relative_to(_SOURCE_TREE):
    raise RuntimeError(
        f"CI must test the installed wheel, but fairqueue was imported from the source tree "
        f"({fairqueue.__file__}); install it (pip install .) and keep python/ off sys.path"
    )


POSTGRES_DSN = os.environ.get("FAIRQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@lru_cache(maxsize=None)
def _postgres_unavailable() -> Optional[str]:
    """Why PostgreSQL cannot be used for tests, or None if it can (checked once per session)."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as e:
        return f"psycopg / psycopg_pool are not installed ({e}): pip install '.[test]'"
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        return f"PostgreSQL is unreachable at {POSTGRES_DSN} ({' '.join(str(e).split())})"
    return None


def require_postgres() -> str:
    """The test database's DSN; skips the test (fails it under CI=true) if it cannot be used."""
    reason = _postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; under CI the PostgreSQL tests must run", pytrace=False)
        pytest.skip(reason)
    return POSTGRES_DSN


@pytest.fixture
def pg_dsn() -> str:
    """The PostgreSQL test database (see the module docstring)."""
    return require_postgres()


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A schema name unique to this test; whatever the test creates in it is dropped afterwards."""
    import psycopg

    name = f"fq_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
