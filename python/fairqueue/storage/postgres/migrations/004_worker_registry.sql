-- Schema version 4: the worker registry, and the worker deaths each job was running at.

-- One row per live worker (and per dead one until a live worker reaps it). A worker's
-- proof of life is the session advisory lock (workers.LOCK_WORKER, lock_key) its own
-- connection holds; last_seen is the server's clock at its last heartbeat; alone is
-- the job it runs with no other beside it, if any (see Storage.worker_alone).
CREATE TABLE {s}.fq_workers (
    name       TEXT             PRIMARY KEY,
    host       TEXT             NOT NULL,
    pid        INTEGER          NOT NULL,
    mode       TEXT             NOT NULL,
    slots      INTEGER          NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    last_seen  DOUBLE PRECISION NOT NULL,
    lock_key   INTEGER          NOT NULL,
    alone      BIGINT
);
-- Thread-mode worker deaths a job was running at: at two it is failed, not re-delivered.
ALTER TABLE {s}.fq_jobs ADD COLUMN worker_deaths INTEGER NOT NULL DEFAULT 0;
