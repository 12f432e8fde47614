-- Statements of the worker registry (workers.py).

-- name: worker_lock
-- Taken on the worker's own connection, for as long as that session lives.
SELECT pg_try_advisory_lock(%s, %s)

-- name: worker_keepalive
-- The server drops a silent peer's session (and so its lock) within seconds.
SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 3

-- name: worker_find
SELECT host, pid, lock_key FROM {s}.fq_workers WHERE name = %s FOR UPDATE

-- name: worker_insert
-- queues: a JSON list of the queues it serves; NULL: every queue.
INSERT INTO {s}.fq_workers (name, host, pid, mode, slots, started_at, last_seen, lock_key, queues)
VALUES (%s, %s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp()), %s, %s)

-- name: worker_seen
UPDATE {s}.fq_workers SET last_seen = extract(epoch FROM clock_timestamp()), lock_key = %s WHERE name = %s

-- name: worker_alone
UPDATE {s}.fq_workers SET alone = %s WHERE name = %s

-- name: worker_list
-- Alive: its lock is held now, by some session of this database.
SELECT w.name, w.host, w.pid, w.mode, w.slots, w.started_at, w.last_seen,
    EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.classid = %s::oid AND l.objid = w.lock_key::oid),
    (SELECT count(*) FROM {s}.fq_jobs j WHERE j.status = 'processing' AND j.lease_owner = w.name), w.queues
FROM {s}.fq_workers w ORDER BY w.name

-- name: worker_dead
-- Workers whose lock is free, seen more than %s seconds ago (a live worker whose
-- lock connection dropped takes it again at its next heartbeat, a second later);
-- one not seen since the server started gets %s seconds to come back first (every
-- worker lost its lock in the restart, and may still be waiting out the outage).
SELECT w.name, w.lock_key FROM {s}.fq_workers w,
    (SELECT extract(epoch FROM clock_timestamp()) AS now, extract(epoch FROM pg_postmaster_start_time()) AS up) t
WHERE w.name <> ALL(%s) AND w.last_seen < t.now - %s AND (w.last_seen > t.up OR t.up < t.now - %s)
    AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    AND l.classid = %s::oid AND l.objid = w.lock_key::oid)

-- name: worker_take_dead
-- Held to commit: the dead worker's key cannot be taken again meanwhile.
SELECT pg_try_advisory_xact_lock(%s, %s)

-- name: worker_delete
-- Only the registration that was found dead (a worker that took a new lock since is left alone).
DELETE FROM {s}.fq_workers WHERE name = %s AND lock_key = %s RETURNING mode, alone

-- name: worker_jobs
SELECT id, org, kind, worker_deaths FROM {s}.fq_jobs
WHERE status = 'processing' AND lease_owner = %s ORDER BY id FOR UPDATE

-- name: worker_job_requeue
UPDATE {s}.fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, extended_status = %s,
    worker_deaths = %s, ready_seq = -nextval('{s}.fq_queued_seq')
WHERE id = %s

-- name: worker_job_quarantine
UPDATE {s}.fq_jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, finished_at = %s,
    extended_status = %s, worker_deaths = %s, error_count = error_count + 1
WHERE id = %s

-- name: worker_leave
DELETE FROM {s}.fq_workers w WHERE w.name = %s
    AND NOT EXISTS (SELECT 1 FROM {s}.fq_jobs j WHERE j.status = 'processing' AND j.lease_owner = w.name)
