-- Schema version 9: the enqueue's usage function plans its queries once per session.
-- PL/pgSQL keeps its queries' plans, but under the default plan_cache_mode a query
-- with parameters gets a custom plan, planned anew, on every call whose estimate the
-- generic plan does not beat; with array parameters it never does, so both of
-- fq_usage_locked's queries were planned on every enqueue (0.05–0.14 ms of its
-- 0.25–0.4). Their plans do not depend on the values: one index probe per org.
ALTER FUNCTION {s}.fq_usage_locked(INTEGER, TEXT, TEXT[], INTEGER) SET plan_cache_mode = force_generic_plan;
