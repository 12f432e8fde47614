-- Schema version 6: alerts once per fleet — each (condition, org) episode's state,
-- which one worker's conditional update flips — and the durable outbox of webhook
-- deliveries (one row per event and webhook URL).
CREATE TABLE {s}.fq_alert_episodes (
    key           TEXT             PRIMARY KEY,
    open          BOOLEAN          NOT NULL,
    opened_at     DOUBLE PRECISION,
    closed_at     DOUBLE PRECISION,
    last_event_id TEXT             NOT NULL
);
CREATE TABLE {s}.fq_webhook_outbox (
    id              BIGSERIAL        PRIMARY KEY,
    event_id        TEXT             NOT NULL,
    url             TEXT             NOT NULL,
    body            TEXT             NOT NULL,
    attempts        INTEGER          NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    delivered_at    DOUBLE PRECISION,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    UNIQUE (event_id, url)
);
-- The deliveries still to make, by when they are due.
CREATE INDEX fq_webhook_outbox_due ON {s}.fq_webhook_outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
