"""The embedded store's two connections (Python's sqlite3 and the Rust statements in
fairqueue._core) must run on one SQLite library: two copies in one process do not
know each other's POSIX locks on the store file, and closing a file in one releases
the other's locks."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

import fairqueue._core as core
from fairqueue.storage.sqlite import SQLiteStorage


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_one_sqlite_library_is_loaded_for_both_connections(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path / "fq.db")  # opens both connections
    try:
        mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "/" in line}
        libraries = {m for m in mapped if Path(m).name.startswith("libsqlite3")}
        assert len(libraries) == 1, f"not one SQLite library in the process (sqlite3 {sqlite3.sqlite_version}): {libraries}"
        native = Path(core.__file__).read_bytes()
        assert b"libsqlite3.so" in native, "fairqueue._core does not link the shared libsqlite3"
        assert b"SQLite format 3" not in native, "fairqueue._core carries a copy of SQLite of its own"
    finally:
        store.close()
