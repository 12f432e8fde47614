-- Schema version 8: an enqueue is one autocommit statement, daily limits included;
-- one index less for every outcome to write; each schedule's queue, priority and cost.
-- A statement's snapshot is taken before it waits for a lock, so a statement that
-- locks orgs' usage cannot read it itself: this function takes the locks (the
-- same ones as lock_orgs, in the same order) and then reads the usage in a
-- snapshot of its own, taken after them (each query of a VOLATILE function takes
-- a fresh snapshot). What it returns includes every enqueue committed before the
-- locks were granted; the locks are held to the caller's commit. PL/pgSQL keeps
-- its queries' plans for the session, where an SQL function plans them each call.
CREATE FUNCTION {s}.fq_usage_locked(lock_class INTEGER, schema_name TEXT, orgs TEXT[], since INTEGER)
RETURNS TABLE (locked_org TEXT, used BIGINT, first_hour INTEGER)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_class, locks.h)
    FROM (SELECT DISTINCT hashtext(schema_name || chr(31) || o.org) AS h FROM unnest(orgs) AS o(org) ORDER BY h) AS locks;
    RETURN QUERY
    SELECT o.org, COALESCE(SUM(g.count), 0)::BIGINT, MIN(g.hour)
    FROM unnest(orgs) AS o(org) LEFT JOIN {s}.fq_usage g ON g.org = o.org AND g.hour >= since
    GROUP BY o.org;
END
$$;
-- The finish-time index repeats fq_jobs_status_finished (status, finished_at), which
-- the queries of finished jobs since a time read a range per finished status of;
-- each outcome wrote an entry in both.
DROP INDEX {s}.fq_jobs_finished;
-- A schedule's fires wait in its job class's queue, with its priority and cost.
ALTER TABLE {s}.fq_triggers ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE {s}.fq_triggers ADD COLUMN priority SMALLINT NOT NULL DEFAULT 5;
ALTER TABLE {s}.fq_triggers ADD COLUMN cost INTEGER NOT NULL DEFAULT 1;
