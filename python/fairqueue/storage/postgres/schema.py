"""The PostgreSQL store's schema: numbered migrations, versions, and the upgrade that applies them."""

from __future__ import annotations

import re
from importlib import resources

from fairqueue.errors import SchemaVersionError, StorageError
from fairqueue.storage.interface import SCHEMA_VERSION

from .connection import LOCK_UPGRADE, Cursor, Database
from .queries import read_sql

__all__ = ["MIGRATIONS", "check_version", "upgrade", "version"]

_MIGRATION_FILE = re.compile(r"(\d{3})_\w+\.sql")


def _migrations() -> dict[int, str]:
    found: dict[int, str] = {}
    folder = resources.files(__name__.rpartition(".")[0]).joinpath("migrations")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        named = _MIGRATION_FILE.fullmatch(entry.name)
        if named:
            found[int(named.group(1))] = read_sql(f"migrations/{entry.name}")
    if sorted(found) != list(range(1, SCHEMA_VERSION + 1)):
        raise AssertionError(f"every schema version 1..{SCHEMA_VERSION} needs its migration, found {sorted(found)}")
    return found


# Migration n (migrations/00n_*.sql) takes a schema at version n - 1 to version n,
# "{s}" standing for the schema. Each runs inside the upgrade transaction
# (PostgreSQL DDL is transactional): a failed upgrade leaves the schema as it was.
# Never edit a released migration; append a new one.
MIGRATIONS: dict[int, str] = _migrations()
"""Schema version -> the SQL that takes a schema from the version before to it."""


def upgrade(db: Database) -> int:
    """Creates the schema or migrates it to this fairqueue's version; returns that version.

    Idempotent and safe to run from many processes at once (they take turns on
    an advisory lock); all migrations apply in one transaction or none does.

    Raises:
        SchemaVersionError: the schema is newer than this fairqueue.
    """

    def body(cur: Cursor) -> int:
        db.lock_schema(cur, LOCK_UPGRADE)
        cur.execute(db.sql["schema_create"])
        cur.execute(db.sql["schema_create_meta"])
        found = version(db, cur)
        for target in range(found + 1, SCHEMA_VERSION + 1):
            cur.execute(MIGRATIONS[target].replace("{s}", db.s))
        if found < SCHEMA_VERSION:
            cur.execute(db.sql["schema_set_version"], (str(SCHEMA_VERSION),))
        cur.execute(db.sql["schema_ready_seq_horizon"])
        return SCHEMA_VERSION

    return db.transaction(body)


def version(db: Database, cur: Cursor) -> int:
    """The schema's version (0: none yet); refuses a newer one."""
    cur.execute(db.sql["schema_find_meta"], (f"{db.s}.fq_meta",))
    found = cur.fetchone()
    if found is None or found[0] is None:
        return 0
    cur.execute(db.sql["schema_version"])
    row = cur.fetchone()
    number = 0 if row is None else int(row[0])
    if number > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"fairqueue {db.where} has schema version {number}, newer than this fairqueue's "
            f"{SCHEMA_VERSION}: upgrade fairqueue to use it"
        )
    return number


def check_version(db: Database) -> None:
    """Raises :class:`StorageError` unless the schema is at this fairqueue's version
    (:class:`SchemaVersionError` if newer)."""
    found = db.transaction(lambda cur: version(db, cur))
    if found < SCHEMA_VERSION:
        state = "does not exist" if found == 0 else f"is at version {found}"
        raise StorageError(
            f"fairqueue {db.where} {state}; this fairqueue needs version {SCHEMA_VERSION}: "
            "run PostgresStorage.upgrade() (or open the store with upgrade=True)"
        )
