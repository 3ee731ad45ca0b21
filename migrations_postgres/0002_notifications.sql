-- Alert notifications on PostgreSQL: SQLite's outbox (migrations/0003_notifications.sql),
-- shared by every instance. Each channel is derived and delivered by one instance at a
-- time, the holder of its advisory lock, so the checkpoint is kept per channel: the
-- notifier's projections (msgpack) and the position up to which every notice of that
-- channel is in `outbox`. A checkpoint only moves forward, whoever writes it.
-- `outbox` holds one row per notice and channel, keyed by an idempotency key that is
-- stable across retries, replays and instances, so a notice derived again by another
-- instance after a crash inserts nothing twice. Replays and read models never touch them.
CREATE TABLE notification_checkpoint (
    channel     TEXT             PRIMARY KEY,
    position    BIGINT           NOT NULL,
    state       BYTEA            NOT NULL,
    saved_at    DOUBLE PRECISION NOT NULL
);

CREATE TABLE outbox (
    idempotency_key TEXT             PRIMARY KEY,
    channel         TEXT             NOT NULL,
    position        BIGINT           NOT NULL,
    payload         BYTEA            NOT NULL,
    status          TEXT             NOT NULL DEFAULT 'pending'
                                     CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER          NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    last_attempt_at DOUBLE PRECISION,
    created_at      DOUBLE PRECISION NOT NULL,
    delivered_at    DOUBLE PRECISION
);

CREATE INDEX outbox_by_status ON outbox (status, channel, next_attempt_at);
