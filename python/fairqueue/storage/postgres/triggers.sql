-- Statements of schedules (triggers.py).
-- Every statement that reads schedules lists the columns of TriggerRecord, in order.

-- name: trigger_names
SELECT name FROM {s}.fq_triggers WHERE org = %s AND state = 'waiting'

-- name: trigger_insert
INSERT INTO {s}.fq_triggers (org, name, cron, timezone, handler, payload, state, created_at,
    next_fire_at, queue, priority, cost) VALUES (%s, %s, %s, %s, %s, %s, 'waiting', %s, %s, %s, %s, %s) RETURNING id

-- name: trigger_get
SELECT id, org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, previous_fire_at,
    times_fired, last_job_id, queue, priority, cost
FROM {s}.fq_triggers WHERE id = %s

-- name: trigger_list
SELECT id, org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, previous_fire_at,
    times_fired, last_job_id, queue, priority, cost
FROM {s}.fq_triggers
WHERE (%s::text IS NULL OR org = %s) AND (%s::text IS NULL OR state = %s) ORDER BY id

-- name: trigger_abort_lock
SELECT org, state FROM {s}.fq_triggers WHERE id = %s FOR UPDATE

-- name: trigger_abort
UPDATE {s}.fq_triggers SET state = 'aborted', next_fire_at = NULL WHERE id = %s AND state = 'waiting'

-- name: trigger_any_due
SELECT 1 FROM {s}.fq_triggers WHERE state = 'waiting' AND next_fire_at <= %s LIMIT 1

-- name: trigger_lock_due
-- FOR UPDATE SKIP LOCKED: hosts firing at the same moment split the due schedules,
-- and one that waited on a lock re-checks the row and finds it no longer due.
SELECT id, org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, previous_fire_at,
    times_fired, last_job_id, queue, priority, cost
FROM {s}.fq_triggers WHERE state = 'waiting' AND next_fire_at <= %s
ORDER BY next_fire_at, id LIMIT %s FOR UPDATE SKIP LOCKED

-- name: trigger_refused_job
-- The job of a fire past its org's daily limit: stored failed, with the reason.
INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, finished_at,
    error_count, extended_status, queue, priority, cost)
VALUES (%s, %s, %s, %s, 'failed', %s, %s, 1, %s, %s, %s, %s) RETURNING id

-- name: trigger_advance
UPDATE {s}.fq_triggers t SET state = u.state, next_fire_at = u.next_fire_at,
    previous_fire_at = t.next_fire_at, times_fired = t.times_fired + 1, last_job_id = u.job_id
FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::bigint[]) AS u(id, state, next_fire_at, job_id)
WHERE t.id = u.id
