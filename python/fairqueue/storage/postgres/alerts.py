"""Alert episodes and the webhook outbox in the PostgreSQL store.

An episode flips in one conditional statement (an upsert that applies only to a
closed row, an update only to an open one), so of many workers that see the same
change one gets its row back, and only that one's event goes into the outbox, in
the same transaction. Deliveries are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from fairqueue.storage.interface import WebhookDelivery

from .connection import Cursor, Database

__all__ = ["episode_set", "episodes", "outbox_add", "outbox_claim", "outbox_prune", "outbox_settle"]


def episodes(db: Database) -> dict[str, float]:
    """See :meth:`Storage.alert_episodes`."""
    return {row[0]: row[1] for row in db.read(db.sql["alert_episodes"])}


def _add(db: Database, cur: Cursor, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
    if deliveries:
        cur.executemany(db.sql["webhook_outbox_add"], [(event_id, url, body, now, now) for url, body in deliveries])


def episode_set(db: Database, key: str, open: bool, now: float, event_id: str,
                deliveries: Sequence[tuple[str, str]]) -> bool:  # fmt: skip
    """See :meth:`Storage.alert_episode_set`."""

    def body(cur: Cursor) -> bool:
        if open:
            cur.execute(db.sql["alert_episode_open"], (key, now, event_id))
        else:
            cur.execute(db.sql["alert_episode_close"], (now, event_id, key))
        if cur.fetchone() is None:
            return False
        _add(db, cur, event_id, deliveries, now)
        return True

    return db.transaction(body)


def outbox_add(db: Database, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
    """See :meth:`Storage.webhook_outbox_add`."""
    db.transaction(lambda cur: _add(db, cur, event_id, deliveries, now))


def outbox_claim(db: Database, now: float, limit: int, hold: float) -> list[WebhookDelivery]:
    """See :meth:`Storage.webhook_outbox_claim`."""
    rows = db.read(db.sql["webhook_outbox_claim"], (now + hold, now, limit), durable=False)
    return sorted((WebhookDelivery(*row) for row in rows), key=lambda d: d.id)


def outbox_settle(db: Database, delivery_id: int, now: float, error: Optional[str], retry_at: Optional[float]) -> None:
    """See :meth:`Storage.webhook_outbox_settle`."""
    params = (retry_at if error is not None else None, error, now if error is None else None, delivery_id)
    db.transaction(lambda cur: cur.execute(db.sql["webhook_outbox_settle"], params))


def outbox_prune(db: Database, before: float, limit: int) -> int:
    """See :meth:`Storage.webhook_outbox_prune`."""

    def body(cur: Cursor) -> int:
        cur.execute(db.sql["webhook_outbox_prune"], (before, limit))
        return cur.rowcount

    return db.transaction(body, durable=False)
