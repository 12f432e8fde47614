-- Statements of the completions channel (completions.py): outcomes announced to waiters.

-- name: completions_notify
-- The ids whose outcome this transaction stores, as decimal text, 380 to a notification
-- at most: a payload must stay under 8,000 bytes, and a bigint with its comma takes
-- up to 21. Delivered at commit, never on a rollback.
SELECT pg_notify(%s, string_agg(id::text, ',' ORDER BY id))
FROM (SELECT id, (row_number() OVER () - 1) / 380 AS part FROM unnest(%b::bigint[]) AS u(id)) AS parts
GROUP BY part
