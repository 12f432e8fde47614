-- Statements of retention (retention.py): the pruner's bounded deletes. Each runs in a
-- transaction of its own that first tries the schema's prune lock (prune_try_lock), so
-- one host deletes at a time and the others skip their turn rather than queue behind it.

-- name: prune_try_lock
SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))

-- name: job_prune
-- Per (status, cutoff), in the order given, that status's oldest finished jobs; rows
-- another transaction holds (a re-run being queued) are skipped, and the delete checks
-- status and finish time again, so a job re-queued meanwhile is never deleted. Its batch
-- error events and any flex row go with it.
WITH cutoffs AS (
    SELECT * FROM unnest(%b::text[], %b::float8[]) WITH ORDINALITY AS c(status, before, ord)
), candidates AS (
    SELECT j.id, c.status, c.before FROM cutoffs c CROSS JOIN LATERAL (
        SELECT q.id, q.finished_at FROM {s}.fq_jobs q WHERE q.finished_at < c.before AND q.status = c.status
        ORDER BY q.finished_at, q.id LIMIT %s FOR UPDATE SKIP LOCKED
    ) j ORDER BY c.ord, j.finished_at, j.id LIMIT %s
), gone AS (
    DELETE FROM {s}.fq_jobs d USING candidates c
    WHERE d.id = c.id AND d.status = c.status AND d.finished_at < c.before RETURNING d.id
), errors AS (
    DELETE FROM {s}.fq_batch_errors WHERE job_id IN (SELECT id FROM gone)
), flex AS (
    DELETE FROM {s}.fq_flex WHERE job_id IN (SELECT id FROM gone)
)
SELECT COUNT(*) FROM gone

-- name: job_prune_count
SELECT COUNT(*) FROM (
    SELECT j.id FROM unnest(%b::text[], %b::float8[]) WITH ORDINALITY AS c(status, before, ord) CROSS JOIN LATERAL (
        SELECT q.id FROM {s}.fq_jobs q WHERE q.finished_at < c.before AND q.status = c.status
        ORDER BY q.finished_at, q.id LIMIT %s
    ) j LIMIT %s
) AS found

-- name: history_expire
DELETE FROM {s}.fq_history WHERE id IN (SELECT id FROM {s}.fq_history WHERE at < %s ORDER BY at, id LIMIT %s)

-- name: history_expire_count
SELECT COUNT(*) FROM (SELECT id FROM {s}.fq_history WHERE at < %s ORDER BY at LIMIT %s) AS found

-- name: history_thinned
-- How far history is thinned to one point per minute (fq_meta): each call goes on from there.
SELECT value FROM {s}.fq_meta WHERE key = 'history_thinned'

-- name: history_set_thinned
INSERT INTO {s}.fq_meta (key, value) VALUES ('history_thinned', %s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value

-- name: history_oldest
SELECT MIN(at) FROM {s}.fq_history

-- name: history_span
-- Where a span of about the parameter's entries from the start ends.
SELECT at FROM {s}.fq_history WHERE at >= %s AND at < %s ORDER BY at OFFSET %s LIMIT 1

-- name: history_thin
-- Samples in [%s, %s) of the kinds given beyond the highest of each (kind, org, minute).
DELETE FROM {s}.fq_history WHERE id IN (
    SELECT id FROM (
        SELECT id, ROW_NUMBER() OVER (PARTITION BY kind, org, floor(at / 60) ORDER BY value DESC, at, id) AS rank
        FROM {s}.fq_history WHERE at >= %s AND at < %s AND kind = ANY(%b::text[])
    ) AS ranked WHERE rank > 1 LIMIT %s
)

-- name: history_thin_count
SELECT COUNT(*) FROM (
    SELECT id FROM (
        SELECT id, ROW_NUMBER() OVER (PARTITION BY kind, org, floor(at / 60) ORDER BY value DESC, at, id) AS rank
        FROM {s}.fq_history WHERE at >= %s AND at < %s AND kind = ANY(%b::text[])
    ) AS ranked WHERE rank > 1 LIMIT %s
) AS found

-- name: usage_prune
DELETE FROM {s}.fq_usage WHERE (org, hour) IN (
    SELECT org, hour FROM {s}.fq_usage WHERE hour < %s ORDER BY hour, org LIMIT %s FOR UPDATE SKIP LOCKED
)

-- name: usage_prune_count
SELECT COUNT(*) FROM (SELECT 1 FROM {s}.fq_usage WHERE hour < %s LIMIT %s) AS found

-- name: rate_state_prune
DELETE FROM {s}.fq_rate_state WHERE scope IN (
    SELECT scope FROM {s}.fq_rate_state WHERE tat < %s LIMIT %s FOR UPDATE SKIP LOCKED
) AND tat < %s

-- name: rate_state_prune_count
SELECT COUNT(*) FROM (SELECT 1 FROM {s}.fq_rate_state WHERE tat < %s LIMIT %s) AS found

-- name: batch_errors_prune
-- The oldest events by id (the order they were stored in), up to the first one recorded
-- at or after the cutoff: reads the limit's rows at most, whatever the table holds.
WITH first AS (SELECT id, at FROM {s}.fq_batch_errors ORDER BY id LIMIT %s)
DELETE FROM {s}.fq_batch_errors WHERE id IN (
    SELECT id FROM first WHERE id < COALESCE((SELECT MIN(id) FROM first WHERE at >= %s), 9223372036854775807)
)

-- name: batch_errors_prune_count
WITH first AS (SELECT id, at FROM {s}.fq_batch_errors ORDER BY id LIMIT %s)
SELECT COUNT(*) FROM first
WHERE id < COALESCE((SELECT MIN(id) FROM first WHERE at >= %s), 9223372036854775807)
