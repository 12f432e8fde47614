-- Schema version 7: flow control inside a tenant and tenant settings that live in
-- the store — each job's named queue, concurrency key, priority and cost; the
-- stored settings (per org, (org, kind), (org, key), tier, queue) with the version
-- every change bumps; each rate limit's state (GCRA's theoretical arrival time);
-- the queues a worker serves.
ALTER TABLE {s}.fq_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE {s}.fq_jobs ADD COLUMN key TEXT;
ALTER TABLE {s}.fq_jobs ADD COLUMN priority SMALLINT NOT NULL DEFAULT 5;
ALTER TABLE {s}.fq_jobs ADD COLUMN cost INTEGER NOT NULL DEFAULT 1;
-- Claims count each capped org's and key's processing jobs.
CREATE INDEX fq_jobs_processing_key ON {s}.fq_jobs (org, key) WHERE status = 'processing';
-- A claim that lost a job to another worker takes a stand-in from the same line
-- (org, kind, key, queue), highest priority first, through this index (the pair's
-- index it replaces left the key to a filter: a scan of a flood for a quiet key).
DROP INDEX {s}.fq_jobs_pair_queued;
CREATE INDEX fq_jobs_line_queued ON {s}.fq_jobs (org, kind, (COALESCE(key, '')), queue, priority DESC, id)
    WHERE status = 'queued';
CREATE TABLE {s}.fq_settings (
    scope      TEXT             NOT NULL,
    name       TEXT             NOT NULL,
    kind       TEXT             NOT NULL DEFAULT '',
    key        TEXT             NOT NULL DEFAULT '',
    vals       JSONB            NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by TEXT,
    PRIMARY KEY (scope, name, kind, key)
);
CREATE TABLE {s}.fq_settings_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO {s}.fq_settings_version (id, version) VALUES (1, 0);
CREATE TABLE {s}.fq_rate_state (
    scope TEXT             PRIMARY KEY,
    tat   DOUBLE PRECISION NOT NULL
);
ALTER TABLE {s}.fq_workers ADD COLUMN queues TEXT;
