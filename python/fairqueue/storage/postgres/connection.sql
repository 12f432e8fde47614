-- Statements of the connection helpers (connection.py): wake-ups and advisory locks.

-- name: notify
-- A constant payload: PostgreSQL folds identical notifications of one transaction into one.
SELECT pg_notify(%s, 'queued')

-- name: lock_schema
-- One transaction-scoped advisory lock per (purpose, schema): upgrades, publishing.
SELECT pg_advisory_xact_lock(%s, hashtext(%s))

-- name: lock_orgs
-- One lock per org, taken in one global order (the hashes sorted).
SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(%s::text || chr(31) || o) AS h
FROM unnest(%b::text[]) AS o ORDER BY h) AS locks

-- name: commit_without_flush
-- Made once per connection of the pool for state changes (see the package docstring).
SET synchronous_commit = off
