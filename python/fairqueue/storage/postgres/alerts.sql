-- Statements of alert episodes and the webhook outbox (alerts.py).

-- name: alert_episodes
SELECT key, opened_at FROM {s}.fq_alert_episodes WHERE open

-- name: alert_episode_open
-- Concurrent openers: one inserts (or flips a closed row); the others find it open
-- (ON CONFLICT re-reads the committed row) and get no row back.
INSERT INTO {s}.fq_alert_episodes AS e (key, open, opened_at, closed_at, last_event_id) VALUES (%s, TRUE, %s, NULL, %s)
ON CONFLICT (key) DO UPDATE SET open = TRUE, opened_at = excluded.opened_at, closed_at = NULL,
    last_event_id = excluded.last_event_id
WHERE NOT e.open
RETURNING key

-- name: alert_episode_close
UPDATE {s}.fq_alert_episodes SET open = FALSE, closed_at = %s, last_event_id = %s WHERE key = %s AND open RETURNING key

-- name: webhook_outbox_add
INSERT INTO {s}.fq_webhook_outbox (event_id, url, body, next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (event_id, url) DO NOTHING

-- name: webhook_outbox_claim
-- Workers claiming at once split the due rows (SKIP LOCKED) instead of waiting on each other.
UPDATE {s}.fq_webhook_outbox SET next_attempt_at = %s WHERE id IN (
    SELECT id FROM {s}.fq_webhook_outbox WHERE next_attempt_at <= %s ORDER BY next_attempt_at LIMIT %s
    FOR UPDATE SKIP LOCKED)
RETURNING id, event_id, url, body, attempts, created_at

-- name: webhook_outbox_settle
UPDATE {s}.fq_webhook_outbox SET attempts = attempts + 1, next_attempt_at = %s, last_error = %s, delivered_at = %s
WHERE id = %s

-- name: webhook_outbox_prune
DELETE FROM {s}.fq_webhook_outbox WHERE id IN (
    SELECT id FROM {s}.fq_webhook_outbox WHERE next_attempt_at IS NULL AND created_at < %s ORDER BY id LIMIT %s)
