-- Statements of the tenant settings (settings.py).

-- name: settings_version
SELECT version FROM {s}.fq_settings_version WHERE id = 1

-- name: settings_read
-- The version and every row from one statement's snapshot (one row of NULLs after
-- the version when there is no setting).
SELECT v.version, s.scope, s.name, s.kind, s.key, s.vals, s.updated_at, s.updated_by
FROM {s}.fq_settings_version v LEFT JOIN {s}.fq_settings s ON TRUE WHERE v.id = 1
ORDER BY s.scope, s.name, s.kind, s.key

-- name: settings_rows
-- The stored values of the rows a change patches.
SELECT s.scope, s.name, s.kind, s.key, s.vals FROM {s}.fq_settings s
JOIN unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS u(scope, name, kind, key) USING (scope, name, kind, key)

-- name: settings_upsert
INSERT INTO {s}.fq_settings (scope, name, kind, key, vals, updated_at, updated_by)
SELECT u.scope, u.name, u.kind, u.key, u.vals::jsonb, %s::float8, %s::text
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) AS u(scope, name, kind, key, vals)
ON CONFLICT (scope, name, kind, key) DO UPDATE
SET vals = EXCLUDED.vals, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by

-- name: settings_delete
-- The rows a change left with no field.
DELETE FROM {s}.fq_settings s USING unnest(%b::text[], %b::text[], %b::text[], %b::text[]) AS u(scope, name, kind, key)
WHERE s.scope = u.scope AND s.name = u.name AND s.kind = u.kind AND s.key = u.key

-- name: settings_bump
UPDATE {s}.fq_settings_version SET version = version + 1 WHERE id = 1 RETURNING version

-- name: settings_notify
-- Delivered at commit, never on a rollback; the payload is the new version.
SELECT pg_notify(%s, %s)
