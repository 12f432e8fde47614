-- Schema version 9: the enqueue's usage function plans its queries once per session.
-- PL/pgSQL keeps its queries' plans, but under the default plan_cache_mode a query
-- with parameters keeps a custom plan, planned anew each call, while the generic
-- plan's estimate does not beat it; here it did not, and forcing the generic plan
-- took 0.05–0.14 ms off each enqueue's 0.25–0.4 ms in the function (benches/README).
-- The plans do not depend on the values: one index probe per org.
ALTER FUNCTION {s}.fq_usage_locked(INTEGER, TEXT, TEXT[], INTEGER) SET plan_cache_mode = force_generic_plan;
