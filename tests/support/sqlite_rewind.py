"""Turns a SQLite store back into what an older fairqueue left (its schema at an
earlier version, its jobs kept), so tests can check the migrations forward. Each
new schema version adds its undo here, newest first."""

from __future__ import annotations

import sqlite3

from fairqueue.storage import SCHEMA_VERSION

UNDO: dict[int, list[str]] = {
    9: [],  # PostgreSQL's alone
    8: ["CREATE INDEX fq_jobs_finished ON fq_jobs (finished_at) WHERE finished_at IS NOT NULL",
        *(f"ALTER TABLE fq_triggers DROP COLUMN {column}" for column in ("queue", "priority", "cost"))],
    7: [
        "DROP INDEX fq_jobs_processing_key",
        "DROP INDEX fq_jobs_line_queued",
        "CREATE INDEX fq_jobs_pair_queued ON fq_jobs (org, kind, id) WHERE status = 'queued'",
        "DROP TABLE fq_settings",
        "DROP TABLE fq_settings_version",
        "DROP TABLE fq_rate_state",
        *(f"ALTER TABLE fq_jobs DROP COLUMN {column}" for column in ("queue", "key", "priority", "cost")),
        "ALTER TABLE fq_workers DROP COLUMN queues",
    ],
    6: ["DROP TABLE fq_alert_episodes", "DROP TABLE fq_webhook_outbox"],
    5: ["DROP INDEX fq_jobs_status_finished",
        *(f"ALTER TABLE fq_jobs DROP COLUMN {column}" for column in ("handler_attempts", "result", "errors"))],  # fmt: skip
    4: ["DROP TABLE fq_workers", "ALTER TABLE fq_jobs DROP COLUMN worker_deaths"],
    3: ["CREATE INDEX fq_jobs_leases ON fq_jobs (lease_expires_at) WHERE status = 'processing'"],
    2: ["DROP INDEX fq_jobs_processing"],
}
assert max(UNDO) == SCHEMA_VERSION, "a new schema version needs its undo here"


def rewind(db: sqlite3.Connection, version: int) -> None:
    """Undoes every migration after ``version`` and records ``version`` as the store's."""
    for target in range(SCHEMA_VERSION, version, -1):
        for statement in UNDO[target]:
            db.execute(statement)
    db.execute("UPDATE fq_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
