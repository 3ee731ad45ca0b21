-- Alert notifications. The notifier follows the log with projections of its own;
-- `notification_checkpoint` holds their state (msgpack) and the position it covers.
-- `outbox` holds one row per notice and channel, keyed by an idempotency key that is
-- stable across retries and replays, so re-deriving a notice after a crash inserts
-- nothing twice. Rows and the checkpoint are written by the notifier alone; replays and
-- read models never touch them.
CREATE TABLE notification_checkpoint (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    position    INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    saved_at    REAL    NOT NULL
);

CREATE TABLE outbox (
    idempotency_key TEXT    PRIMARY KEY,
    channel         TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    payload         BLOB    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    last_error      TEXT,
    last_attempt_at REAL,
    created_at      REAL    NOT NULL,
    delivered_at    REAL
);

CREATE INDEX outbox_by_status ON outbox (status, channel, next_attempt_at);
