-- Schema version 3: claims as plain statements; no index of lease times.

-- Claims are plain statements in the worker's transaction now (PostgresStorage._claim):
-- the one-statement function cost 2-3 ms of planning a call and held the cap locks throughout.
DROP FUNCTION {s}.fq_claim(BIGINT[], TEXT[], TEXT[], INTEGER[], TEXT, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER, TEXT);
-- The lease sweep reads the small index of processing jobs (fq_jobs_processing); a
-- separate index of their lease times cost index writes on every claim, outcome and
-- heartbeat (a heartbeat changes no indexed column now: a HOT update).
DROP INDEX {s}.fq_jobs_leases;
