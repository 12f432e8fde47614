-- Statements of the daily usage (usage.py): async executions per org and hour.

-- name: usage_counted
SELECT COALESCE(SUM(count), 0), MIN(hour) FROM {s}.fq_usage WHERE org = %s AND hour >= %s

-- name: usage_add
-- The rows come in org order, so concurrent transactions lock usage rows in one order.
INSERT INTO {s}.fq_usage (org, hour, count) SELECT * FROM unnest(%b::text[], %b::int[], %b::int[])
ON CONFLICT (org, hour) DO UPDATE SET count = fq_usage.count + EXCLUDED.count
