-- Schema version 8: live jobs apart from finished ones (see the package docstring).
-- fq_jobs_live holds the jobs that wait or run (holding, queued, preparing,
-- processing) with the indexes of the hot statements only; fq_jobs_done holds the
-- finished ones with the indexes of the dashboard and retention; an outcome moves
-- its job in one statement (DELETE … RETURNING into INSERT). fq_jobs becomes a view
-- of both, so a reader of "any job" (and an operator's own query) sees what it saw.

ALTER TABLE {s}.fq_jobs RENAME TO fq_jobs_live;
-- Same columns, same order: the two tables' rows are one another's (the view, the moves).
CREATE TABLE {s}.fq_jobs_done (LIKE {s}.fq_jobs_live INCLUDING DEFAULTS);
-- Ids come from the live table's identity sequence: a job keeps its id as it moves,
-- and a job stored finished at once (a refused schedule fire) draws from the same one.
ALTER TABLE {s}.fq_jobs_done ADD PRIMARY KEY (id),
    ALTER COLUMN id SET DEFAULT nextval('{s}.fq_jobs_id_seq'),
    ADD CONSTRAINT fq_jobs_done_status_check CHECK (status IN ('completed', 'failed', 'aborted', 'discarded'));
WITH finished AS (
    DELETE FROM {s}.fq_jobs_live WHERE status IN ('completed', 'failed', 'aborted', 'discarded') RETURNING *
)
INSERT INTO {s}.fq_jobs_done SELECT * FROM finished;
-- The database itself keeps a finished job out of the live table (a worker of an older
-- fairqueue still running during the upgrade fails its outcome; the lease sweep re-delivers).
ALTER TABLE {s}.fq_jobs_live DROP CONSTRAINT fq_jobs_status_check;
ALTER TABLE {s}.fq_jobs_live ADD CONSTRAINT fq_jobs_live_status_check
    CHECK (status IN ('holding', 'queued', 'preparing', 'processing'));
-- Finish times are the history's: no live job has one.
DROP INDEX {s}.fq_jobs_finished;
DROP INDEX {s}.fq_jobs_status_finished;
CREATE INDEX fq_jobs_done_org ON {s}.fq_jobs_done (org, id);
CREATE INDEX fq_jobs_done_finished ON {s}.fq_jobs_done (finished_at);
CREATE INDEX fq_jobs_done_status_finished ON {s}.fq_jobs_done (status, finished_at);
CREATE VIEW {s}.fq_jobs AS
    SELECT * FROM {s}.fq_jobs_live UNION ALL SELECT * FROM {s}.fq_jobs_done;
