"""Tenant settings in the PostgreSQL store: rows of values per scope, and the version
every change bumps (see :meth:`Storage.settings_write`).

A change takes :data:`~.connection.LOCK_SETTINGS` exclusively, to its commit; every
claim that checks a settings version takes it shared before reading the version
(:func:`.claims.claim_in`). So a change waits for the claims under way and holds
back those after it: a claim that commits after a change has read its version,
and one built from the settings before it claims nothing. Each change is
announced on :attr:`Database.settings_channel` (payload: the new version).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Optional

from fairqueue.records import SettingChange, SettingRow

from .connection import LOCK_SETTINGS, Cursor, Database

__all__ = ["read", "subscribe", "version", "write"]

RowKey = tuple[str, str, str, str]


def version(db: Database) -> int:
    """See :meth:`Storage.settings_version`."""
    [(number,)] = db.read(db.sql["settings_version"])
    return int(number)


def read(db: Database) -> tuple[int, list[SettingRow]]:
    """See :meth:`Storage.settings_read`: one statement, one snapshot."""
    rows = db.read(db.sql["settings_read"])
    number = int(rows[0][0])
    settings = [
        SettingRow(scope, name, kind, key, dict(vals), float(updated_at), updated_by)
        for _, scope, name, kind, key, vals, updated_at, updated_by in rows
        if scope is not None
    ]
    return number, settings


def write(db: Database, changes: Sequence[SettingChange], now: float, by: Optional[str]) -> int:
    """See :meth:`Storage.settings_write`: one transaction under the exclusive settings lock."""
    if not changes:
        return version(db)
    touched: list[RowKey] = list(dict.fromkeys((c.scope, c.name, c.kind, c.key) for c in changes))

    def body(cur: Cursor) -> int:
        db.lock_schema(cur, LOCK_SETTINGS)
        cur.execute(db.sql["settings_rows"], columns(touched))
        stored: dict[RowKey, dict[str, Any]] = {
            (scope, name, kind, key): dict(vals) for scope, name, kind, key, vals in cur.fetchall()
        }
        for c in changes:
            row = stored.setdefault((c.scope, c.name, c.kind, c.key), {})
            for field, value in c.values.items():
                if value is None:
                    row.pop(field, None)
                else:
                    row[field] = value
        kept = [k for k in touched if stored[k]]
        emptied = [k for k in touched if not stored[k]]
        if kept:
            cur.execute(
                db.sql["settings_upsert"],
                (float(now), by, *columns(kept), [json.dumps(stored[k], separators=(",", ":")) for k in kept]),
            )
        if emptied:
            cur.execute(db.sql["settings_delete"], columns(emptied))
        cur.execute(db.sql["settings_bump"])
        bumped = cur.fetchone()
        assert bumped is not None
        cur.execute(db.sql["settings_notify"], (db.settings_channel, str(bumped[0])))
        return int(bumped[0])

    return db.transaction(body, pipeline=True)


def columns(keys: Sequence[RowKey]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Row keys as the four text arrays the statements unnest."""
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]


def subscribe(db: Database, callback: Callable[[], None]) -> Callable[[], None]:
    """See :meth:`Storage.settings_subscribe`: on the store's one LISTEN connection."""
    return db.subscribe(callback, db.settings_channel)
