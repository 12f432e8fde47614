-- Statements of batch jobs (flex.py): each org's flex queue, batch progress and error events.
-- An org's active batches are counted one status at a time, each literal matching a
-- partial index (a prepared statement's parameter would not), so the count never
-- reads the org's finished history.

-- name: flex_counts
-- The org's queued and processing batches, and its holding ones.
SELECT (SELECT COUNT(*) FROM {s}.fq_jobs j WHERE j.org = %s AND j.kind = 'batch' AND j.status = 'queued')
     + (SELECT COUNT(*) FROM {s}.fq_jobs j WHERE j.org = %s AND j.kind = 'batch' AND j.status = 'processing'),
    (SELECT COUNT(*) FROM {s}.fq_flex WHERE org = %s)

-- name: flex_stalled
-- The orgs holding batches while fewer than the parameter are queued or processing.
SELECT DISTINCT f.org FROM {s}.fq_flex f
WHERE (SELECT COUNT(*) FROM {s}.fq_jobs j WHERE j.org = f.org AND j.kind = 'batch' AND j.status = 'queued')
    + (SELECT COUNT(*) FROM {s}.fq_jobs j WHERE j.org = f.org AND j.kind = 'batch' AND j.status = 'processing') < %s

-- name: flex_take_first
DELETE FROM {s}.fq_flex WHERE job_id = (SELECT job_id FROM {s}.fq_flex WHERE org = %s
ORDER BY position LIMIT 1) RETURNING job_id

-- name: flex_start
UPDATE {s}.fq_jobs SET status = 'queued', ready_seq = -nextval('{s}.fq_queued_seq') WHERE id = %s

-- name: flex_hold
INSERT INTO {s}.fq_flex (job_id, org, position)
SELECT %s, %s, COALESCE(MAX(position), 0) + 1 FROM {s}.fq_flex WHERE org = %s

-- name: flex_remove
DELETE FROM {s}.fq_flex WHERE job_id = %s

-- name: flex_list
SELECT j.id, j.org, j.kind, j.handler, j.payload, j.status, j.created_at, j.run_at, j.started_at, j.finished_at,
    j.attempts, j.items_processed, j.items_total, j.error_count, j.extended_status, j.parent_id, j.chain_depth,
    j.duplicate_signature, j.lease_owner, j.lease_expires_at, j.cancel_requested, j.handler_attempts, j.result, j.errors,
    j.worker_deaths, j.queue, j.key, j.priority, j.cost
FROM {s}.fq_flex f JOIN {s}.fq_jobs j ON j.id = f.job_id
WHERE f.org = %s ORDER BY f.position

-- name: flex_order
SELECT job_id FROM {s}.fq_flex WHERE org = %s ORDER BY position

-- name: flex_reorder
UPDATE {s}.fq_flex f SET position = u.position
FROM unnest(%b::bigint[]) WITH ORDINALITY AS u(job_id, position) WHERE f.job_id = u.job_id

-- name: batch_progress
UPDATE {s}.fq_jobs SET payload = %s, items_processed = %s, items_total = %s, error_count = %s,
    attempts = CASE WHEN status = 'queued' THEN 0 ELSE attempts END WHERE id = %s

-- name: batch_error_add
INSERT INTO {s}.fq_batch_errors (job_id, org, phase, chunk, record_ids, exception_type, message,
    traceback, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: batch_errors
SELECT job_id, org, phase, chunk, record_ids, exception_type, message, traceback, at
FROM {s}.fq_batch_errors WHERE job_id = %s ORDER BY id
