-- Statements of the schema's creation and versions (schema.py); the migrations
-- themselves are migrations/NNN_*.sql.

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS {s}

-- name: schema_create_meta
CREATE TABLE IF NOT EXISTS {s}.fq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)

-- name: schema_find_meta
-- The parameter is the meta table's qualified name: NULL while the schema has none.
SELECT to_regclass(%s)

-- name: schema_version
SELECT value FROM {s}.fq_meta WHERE key = 'schema_version'

-- name: schema_set_version
INSERT INTO {s}.fq_meta (key, value) VALUES ('schema_version', %s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value

-- name: schema_ready_seq_horizon
-- Readers read up to the last number drawn from fq_ready_seq (claims.pending): a
-- queued job numbered by anything but the sequence (a store written before readers
-- had a horizon, a hand-made row) must not stand above it. One probe of the queued
-- jobs' index; the sequence only ever moves up.
SELECT setval('{s}.fq_ready_seq', top) FROM (SELECT MAX(ready_seq) AS top FROM {s}.fq_jobs WHERE status = 'queued') AS m
WHERE top > COALESCE(pg_sequence_last_value('{s}.fq_ready_seq'), 0)
