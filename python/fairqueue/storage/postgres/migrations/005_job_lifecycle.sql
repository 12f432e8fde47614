-- Schema version 5: the job lifecycle — handler attempts apart from deliveries,
-- every failed attempt's error (a JSON array, as text), and the handler's result.
ALTER TABLE {s}.fq_jobs ADD COLUMN handler_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {s}.fq_jobs ADD COLUMN result TEXT;
ALTER TABLE {s}.fq_jobs ADD COLUMN errors TEXT;
-- A job given up on after its retries is discarded.
ALTER TABLE {s}.fq_jobs DROP CONSTRAINT fq_jobs_status_check;
ALTER TABLE {s}.fq_jobs ADD CONSTRAINT fq_jobs_status_check CHECK (status IN
    ('holding', 'queued', 'preparing', 'processing', 'completed', 'failed', 'aborted', 'discarded'));
-- Retention deletes each status's finished jobs oldest first.
CREATE INDEX fq_jobs_status_finished ON {s}.fq_jobs (status, finished_at) WHERE finished_at IS NOT NULL;
