-- Statements of the job operations (jobs.py): enqueue, read, list, count, abort.
-- Every statement that reads records lists the columns of rows.FIELDS, in order.

-- name: job_insert
-- One statement for the whole enqueue: the columns travel as arrays (in binary,
-- %b), the rows come out in the jobs' order, so the identity column draws their
-- ids in that order. A queued job's ready_seq is provisional: its place in line
-- (see the package docstring).
INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id,
    chain_depth, duplicate_signature, queue, key, priority, cost, ready_seq)
SELECT u.org, u.kind, u.handler, u.payload, u.status, %s, u.run_at, u.parent_id, u.chain_depth, u.sig,
    u.queue, u.key, u.priority, u.cost, CASE WHEN u.status = 'queued' THEN -nextval('{s}.fq_queued_seq') END
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::int[],
    %b::text[], %b::text[], %b::text[], %b::text[], %b::int2[], %b::int[]) WITH ORDINALITY
    AS u(org, kind, handler, payload, run_at, parent_id, chain_depth, sig, status, queue, key, priority, cost, ord)
ORDER BY u.ord
RETURNING id, duplicate_signature, org, status

-- name: job_insert_skip_taken
-- job_insert, leaving out a job whose duplicate signature is live instead of
-- failing the statement (and with it the transaction).
INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id,
    chain_depth, duplicate_signature, queue, key, priority, cost, ready_seq)
SELECT u.org, u.kind, u.handler, u.payload, u.status, %s, u.run_at, u.parent_id, u.chain_depth, u.sig,
    u.queue, u.key, u.priority, u.cost, CASE WHEN u.status = 'queued' THEN -nextval('{s}.fq_queued_seq') END
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::int[],
    %b::text[], %b::text[], %b::text[], %b::text[], %b::int2[], %b::int[]) WITH ORDINALITY
    AS u(org, kind, handler, payload, run_at, parent_id, chain_depth, sig, status, queue, key, priority, cost, ord)
ORDER BY u.ord
ON CONFLICT (duplicate_signature)
    WHERE duplicate_signature IS NOT NULL AND status IN ('holding', 'queued', 'preparing', 'processing') DO NOTHING
RETURNING id, duplicate_signature, org, status

-- name: job_get
SELECT id, org, kind, handler, payload, status, created_at, run_at, started_at, finished_at,
    attempts, items_processed, items_total, error_count, extended_status, parent_id, chain_depth,
    duplicate_signature, lease_owner, lease_expires_at, cancel_requested, handler_attempts, result, errors, worker_deaths,
    queue, key, priority, cost
FROM {s}.fq_jobs WHERE id = %s

-- name: job_signature_taken
SELECT 1 FROM {s}.fq_jobs
WHERE duplicate_signature = %s AND status IN ('holding', 'queued', 'preparing', 'processing') LIMIT 1

-- name: job_cancel_requested
SELECT id FROM {s}.fq_jobs WHERE id = ANY(%s) AND cancel_requested ORDER BY id

-- name: job_counts
SELECT org, kind, status, COUNT(*) FROM {s}.fq_jobs GROUP BY org, kind, status

-- name: job_counts_live
-- One query per status of LIVE_STATUSES, its literal matching a partial index's
-- condition: the cost follows the backlog, never the store's history.
SELECT org, kind, status, COUNT(*) FROM {s}.fq_jobs WHERE status = 'holding' GROUP BY org, kind, status
UNION ALL
SELECT org, kind, status, COUNT(*) FROM {s}.fq_jobs WHERE status = 'queued' GROUP BY org, kind, status
UNION ALL
SELECT org, kind, status, COUNT(*) FROM {s}.fq_jobs WHERE status = 'processing' GROUP BY org, kind, status

-- name: job_abort_lock
SELECT org, status, kind FROM {s}.fq_jobs WHERE id = %s FOR UPDATE

-- name: job_abort_waiting
UPDATE {s}.fq_jobs SET status = 'aborted', finished_at = %s, extended_status = 'aborted while waiting'
WHERE id = %s

-- name: job_request_cancel
UPDATE {s}.fq_jobs SET cancel_requested = TRUE WHERE id = %s

-- name: job_waiting_facts
-- The finished counts read the index of finished jobs by status and finish time
-- (a range per finished status), never the store's whole history.
SELECT
    (SELECT COUNT(*) FROM {s}.fq_jobs WHERE status = 'queued' AND org = %s AND kind = %s AND id < %s),
    (SELECT COUNT(*) FROM {s}.fq_jobs WHERE status = 'queued' AND id < %s AND (run_at IS NULL OR run_at <= %s)),
    (SELECT COUNT(*) FROM {s}.fq_jobs WHERE status IN ('completed', 'failed', 'aborted', 'discarded') AND org = %s AND kind = %s AND finished_at >= %s),
    (SELECT COUNT(*) FROM {s}.fq_jobs WHERE status IN ('completed', 'failed', 'aborted', 'discarded') AND finished_at >= %s),
    (SELECT COUNT(*) FROM {s}.fq_jobs WHERE status = 'processing'),
    (SELECT MIN(finished_at) FROM {s}.fq_jobs WHERE status IN ('completed', 'failed', 'aborted', 'discarded') AND finished_at >= %s),
    (SELECT COUNT(*) FROM (SELECT org, kind FROM {s}.fq_jobs WHERE status = 'queued'
                           UNION SELECT org, kind FROM {s}.fq_jobs WHERE status = 'processing') AS lines)

-- name: job_holders
SELECT id FROM {s}.fq_jobs WHERE status = 'processing' AND org = %s AND kind = %s ORDER BY id

-- name: enqueue_savepoint
-- An enqueue inside the caller's transaction runs in a savepoint: a refused
-- insert is rolled back alone and the caller's own work goes on.
SAVEPOINT fairqueue_enqueue

-- name: enqueue_savepoint_release
RELEASE SAVEPOINT fairqueue_enqueue

-- name: enqueue_savepoint_rollback
ROLLBACK TO SAVEPOINT fairqueue_enqueue

-- name: job_rerun_lock
-- The re-runnable jobs among the ids, locked in id order; a job whose duplicate
-- signature a live job holds now is left out (it would break the unique index).
SELECT j.id, j.status, j.extended_status FROM {s}.fq_jobs j
WHERE j.id = ANY(%s) AND j.status = ANY(%s) AND j.kind <> 'batch' AND (%s::text IS NULL OR j.org = %s::text)
    AND (j.duplicate_signature IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.fq_jobs live
         WHERE live.duplicate_signature = j.duplicate_signature AND live.status IN ('holding', 'queued', 'processing')))
ORDER BY j.id FOR UPDATE OF j

-- name: job_rerun
UPDATE {s}.fq_jobs j SET status = 'queued', finished_at = NULL, run_at = NULL, handler_attempts = 0,
    cancel_requested = FALSE, extended_status = u.note, ready_seq = -nextval('{s}.fq_queued_seq')
FROM unnest(%b::bigint[], %b::text[]) AS u(id, note) WHERE j.id = u.id

-- name: job_insert_published
-- An enqueue with no batch, one autocommit statement (see jobs.insert_published):
-- the limited orgs' usage locked and read (fq_usage_locked: the limited orgs'
-- names, their window), then the publish lock, shared, then the jobs with their
-- final ready_seq (job_insert's parameters after the lock's), the usage they add
-- and the wake-up, unless an org's daily limit (limits and jobs per limited org
-- here) refuses them: then none of it. Rows: (id, NULL, NULL, NULL) per job
-- stored, then (NULL, org, count, first hour) per limited org. Each lock's row
-- feeds the next step's, so the usage locks are granted before the publish lock
-- (which comes last of a transaction's locks, see the package docstring) and both
-- before any number is drawn.
WITH usage_locked AS MATERIALIZED (
    SELECT * FROM {s}.fq_usage_locked(%s::int, %s::text, %b::text[], %s::int)
), counted AS MATERIALIZED (
    SELECT u.locked_org AS org, o.lim, o.adding, u.used AS count, u.first_hour
    FROM usage_locked u JOIN unnest(%b::text[], %b::int8[], %b::int8[]) AS o(org, lim, adding) ON o.org = u.locked_org
), locked AS MATERIALIZED (
    SELECT 1 AS granted
    FROM (SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s)) FROM (SELECT COUNT(*) FROM counted) AS c OFFSET 0) AS l
), allowed AS (
    SELECT NOT EXISTS (SELECT 1 FROM counted WHERE count + adding > lim) AS yes
), stored AS (
    INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id,
        chain_depth, duplicate_signature, queue, key, priority, cost, ready_seq)
    SELECT u.org, u.kind, u.handler, u.payload, u.status, %s, u.run_at, u.parent_id, u.chain_depth, u.sig,
        u.queue, u.key, u.priority, u.cost, nextval('{s}.fq_ready_seq') * l.granted
    FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::int[],
        %b::text[], %b::text[], %b::text[], %b::text[], %b::int2[], %b::int[]) WITH ORDINALITY
        AS u(org, kind, handler, payload, run_at, parent_id, chain_depth, sig, status, queue, key, priority, cost, ord)
    CROSS JOIN locked l CROSS JOIN allowed a WHERE a.yes
    ORDER BY u.ord
    RETURNING id
), added AS (
    INSERT INTO {s}.fq_usage (org, hour, count) SELECT * FROM unnest(%b::text[], %b::int[], %b::int[])
    WHERE (SELECT yes FROM allowed)
    ON CONFLICT (org, hour) DO UPDATE SET count = fq_usage.count + EXCLUDED.count
), woken AS (
    -- Read with the stored rows: sent when there are some.
    SELECT pg_notify(%s, 'queued')
)
SELECT s.id, NULL::text, NULL::bigint, NULL::int FROM stored s CROSS JOIN (SELECT COUNT(*) FROM woken) AS w
UNION ALL
SELECT NULL, c.org, c.count, c.first_hour FROM counted c

-- name: job_left_queue
-- See Storage.job_left_queue: the processing jobs of other workers (the partial
-- index of processing jobs) and the jobs finished since (the index of finished
-- jobs by status and finish time, a range per status), never the backlog.
SELECT id FROM {s}.fq_jobs WHERE status = 'processing' AND lease_owner IS DISTINCT FROM %s
UNION ALL
SELECT id FROM {s}.fq_jobs WHERE status IN ('completed', 'failed', 'aborted', 'discarded') AND finished_at >= %s
