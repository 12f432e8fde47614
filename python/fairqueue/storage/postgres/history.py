"""Recorded history in the PostgreSQL store: facts for charts and explanations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

from fairqueue.records import HistoryEntry

from .connection import Cursor, Database

__all__ = ["append", "read"]


def append(db: Database, entries: Sequence[HistoryEntry]) -> None:
    """See :meth:`Storage.history_append`: one transaction, without waiting for the WAL flush."""
    if not entries:
        return

    def body(cur: Cursor) -> None:
        cur.executemany(
            db.sql["history_append"], [(e.at, e.kind, e.org, e.value, json.dumps(e.figures)) for e in entries]
        )

    db.transaction(body, durable=False)


def read(db: Database, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
    """See :meth:`Storage.history_read`."""
    rows = db.read(db.sql["history_read"], (since,))
    return [HistoryEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows if kinds is None or r[1] in kinds]
