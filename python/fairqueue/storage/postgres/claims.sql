-- Statements of the worker's side (claims.py): publishing and reading pending jobs,
-- claims, outcomes, heartbeats and re-deliveries.

-- name: pending_horizon
-- The publish lock, exclusive, for this statement alone (autocommit): granted once
-- every enqueue that drew a ready_seq under it (shared) has ended, so every number
-- up to the sequence's last value, read after the grant, is committed or never will
-- be. Also: whether committed provisional rows wait to be published.
SELECT COALESCE(pg_sequence_last_value('{s}.fq_ready_seq'), 0) * l.granted,
    EXISTS (SELECT 1 FROM {s}.fq_jobs WHERE status = 'queued' AND ready_seq < 0)
FROM (SELECT 1 AS granted FROM (SELECT pg_advisory_xact_lock(%s, hashtext(%s)) OFFSET 0) AS g) AS l

-- name: pending_to_publish
SELECT id FROM {s}.fq_jobs WHERE status = 'queued' AND ready_seq < 0 ORDER BY ready_seq DESC, id

-- name: pending_reserve_seqs
-- Draws as many numbers as the parameter; returns the last.
SELECT setval('{s}.fq_ready_seq', nextval('{s}.fq_ready_seq') + %s - 1)

-- name: pending_publish
-- A job claimed or aborted meanwhile is left alone (its number is simply never used).
UPDATE {s}.fq_jobs j SET ready_seq = u.seq FROM unnest(%b::bigint[], %b::bigint[]) AS u(id, seq)
WHERE j.id = u.id AND j.status = 'queued' AND j.ready_seq < 0

-- name: pending_read
-- The columns of PendingJob, in order. One statement with or without a choice of
-- queues (NULL: all), so that its plan is the same: the queued index in ready_seq order.
SELECT id, org, kind, run_at, key, priority, cost, attempts, ready_seq, queue FROM {s}.fq_jobs
WHERE status = 'queued' AND ready_seq > %s AND ready_seq <= %s AND (%s::text[] IS NULL OR queue = ANY(%s::text[]))
ORDER BY ready_seq LIMIT %s

-- name: claim_lock_asked
-- The still-queued asked-for jobs, locked in id order (claimers never deadlock;
-- one another claimer took meanwhile fails the re-check and drops out).
-- "status || ''": found through the primary key, never through the partial
-- index of queued jobs, which a planner with stale statistics (a fresh
-- backlog) would read whole.
SELECT id, org, kind, key, cost, queue FROM {s}.fq_jobs WHERE id = ANY(%s) AND (status || '') = 'queued'
ORDER BY id FOR UPDATE

-- name: claim_stand_ins
-- For each (org, kind, key, queue) of the asked-for jobs another claimer took, as
-- many of its highest-priority, then oldest, ready queued jobs not asked for,
-- skipping rows other claimers hold locked, through fq_jobs_line_queued. The same
-- key and queue as well as org and kind: a stand-in falls under the same caps and
-- rate limits, and its worker serves its queue.
WITH lost AS (SELECT org, kind, key, queue, COUNT(*) AS n FROM {s}.fq_jobs WHERE id = ANY(%s)
              GROUP BY org, kind, key, queue)
SELECT q.id, lost.org, lost.kind, lost.key, q.cost, lost.queue FROM lost CROSS JOIN LATERAL (
SELECT id, cost FROM {s}.fq_jobs WHERE org = lost.org AND kind = lost.kind AND status = 'queued'
AND COALESCE(key, '') = COALESCE(lost.key, '') AND queue = lost.queue
AND (run_at IS NULL OR run_at <= %s) AND id <> ALL(%s) ORDER BY priority DESC, id LIMIT lost.n FOR UPDATE SKIP LOCKED
) AS q ORDER BY q.id

-- name: claim_lock_settings
-- Shared: claims run side by side, and a settings change (its exclusive twin,
-- settings_lock) waits for those under way and holds back those after it.
SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))

-- name: claim_settings_version
-- A statement of its own after claim_lock_settings: its snapshot sees every
-- settings change committed before the lock was granted.
SELECT version FROM {s}.fq_settings_version WHERE id = 1

-- name: claim_count_processing
-- The processing jobs of the orgs whose caps a claim checks, by kind and key: every
-- count a claim needs (per (org, kind), org and (org, key)) from one statement, as
-- few rows as the jobs those orgs run at once.
SELECT org, kind, key, COUNT(*) FROM {s}.fq_jobs WHERE status = 'processing' AND org = ANY(%s)
GROUP BY org, kind, key

-- name: claim_rate_state
SELECT scope, tat FROM {s}.fq_rate_state WHERE scope = ANY(%s)

-- name: claim_rate_store
-- The rate limits' states an admission moved (serialised by the orgs' locks).
INSERT INTO {s}.fq_rate_state (scope, tat) SELECT * FROM unnest(%b::text[], %b::float8[])
ON CONFLICT (scope) DO UPDATE SET tat = EXCLUDED.tat

-- name: claim_take
UPDATE {s}.fq_jobs SET status = 'processing', lease_owner = %s, lease_expires_at = %s,
    started_at = COALESCE(started_at, %s), attempts = attempts + 1 WHERE id = ANY(%s)
RETURNING id, org, kind, handler, payload, status, created_at, run_at, started_at, finished_at,
    attempts, items_processed, items_total, error_count, extended_status, parent_id, chain_depth,
    duplicate_signature, lease_owner, lease_expires_at, cancel_requested, handler_attempts, result, errors, worker_deaths,
    queue, key, priority, cost

-- name: claim_take_at_version
-- claim_take, unless the settings changed from the version given (after
-- claim_lock_settings: no change can commit before this transaction does).
UPDATE {s}.fq_jobs SET status = 'processing', lease_owner = %s, lease_expires_at = %s,
    started_at = COALESCE(started_at, %s), attempts = attempts + 1 WHERE id = ANY(%s)
    AND (SELECT version FROM {s}.fq_settings_version WHERE id = 1) = %s
RETURNING id, org, kind, handler, payload, status, created_at, run_at, started_at, finished_at,
    attempts, items_processed, items_total, error_count, extended_status, parent_id, chain_depth,
    duplicate_signature, lease_owner, lease_expires_at, cancel_requested, handler_attempts, result, errors, worker_deaths,
    queue, key, priority, cost

-- name: heartbeat
UPDATE {s}.fq_jobs SET lease_expires_at = %s
WHERE id = ANY(%s) AND status = 'processing' AND lease_owner = %s

-- name: finish_final
-- Completed and failed outcomes in one statement, each applied only while its
-- worker still holds the lease.
-- A handler attempt is counted if the handler ran, its error appended to errors.
UPDATE {s}.fq_jobs j SET status = u.status, finished_at = u.at, lease_owner = NULL,
    lease_expires_at = NULL, extended_status = COALESCE(u.error, j.extended_status),
    error_count = j.error_count + (u.error IS NOT NULL)::int, result = u.result,
    handler_attempts = j.handler_attempts + u.ran::int,
    errors = CASE WHEN u.attempt_error IS NULL THEN j.errors
             ELSE (COALESCE(j.errors, '[]')::jsonb || jsonb_build_array(u.attempt_error::jsonb))::text END
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[], %b::text[], %b::bool[], %b::text[])
    AS u(id, worker, status, at, error, result, ran, attempt_error)
WHERE j.id = u.id AND j.status = 'processing' AND j.lease_owner = u.worker RETURNING j.id, j.kind, j.org

-- name: finish_retry
-- A delivery given back by a stopping worker does not count: attempts goes down by one.
UPDATE {s}.fq_jobs j SET status = 'queued', run_at = u.retry_at, lease_owner = NULL,
    lease_expires_at = NULL, extended_status = u.error,
    error_count = j.error_count + (u.error IS NOT NULL AND NOT u.given_back)::int,
    attempts = GREATEST(j.attempts - u.given_back::int, 0),
    handler_attempts = j.handler_attempts + u.ran::int,
    errors = CASE WHEN u.attempt_error IS NULL THEN j.errors
             ELSE (COALESCE(j.errors, '[]')::jsonb || jsonb_build_array(u.attempt_error::jsonb))::text END,
    ready_seq = -nextval('{s}.fq_queued_seq')
FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[], %b::bool[], %b::bool[], %b::text[])
    AS u(id, worker, retry_at, error, given_back, ran, attempt_error)
WHERE j.id = u.id AND j.status = 'processing' AND j.lease_owner = u.worker RETURNING j.id

-- name: finish_note
-- Why the children of an outcome were not stored, in the parent's extended status.
UPDATE {s}.fq_jobs SET extended_status = %s WHERE id = %s

-- name: requeue_expired
-- A row whose owner is finishing or heartbeating it right now is waited
-- for and re-checked: a fresh lease or an outcome leaves it alone.
UPDATE {s}.fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
    extended_status = 'lease expired; re-delivered', ready_seq = -nextval('{s}.fq_queued_seq')
WHERE status = 'processing' AND lease_expires_at < %s RETURNING id
