-- Statements of the recorded history (history.py).

-- name: history_append
INSERT INTO {s}.fq_history (at, kind, org, value, figures) VALUES (%s, %s, %s, %s, %s)

-- name: history_read
SELECT at, kind, org, value, figures FROM {s}.fq_history WHERE at >= %s ORDER BY at, id
