-- The event log on PostgreSQL: the same rows as SQLite's, so the same hash chain.
-- `position` is assigned by the writer that holds the lock on `log_head` (never by a
-- sequence: a rolled-back sequence value would leave a gap), so positions are gap-free
-- and committed in order.
CREATE TABLE events (
    position        BIGINT           PRIMARY KEY,
    event_id        TEXT             NOT NULL UNIQUE,
    stream          TEXT             NOT NULL,
    version         BIGINT           NOT NULL,
    type            TEXT             NOT NULL,
    schema_version  INTEGER          NOT NULL,
    recorded_at     DOUBLE PRECISION NOT NULL,
    payload         BYTEA            NOT NULL,
    correlation_id  TEXT,
    causation_id    TEXT,
    actor           TEXT,
    hash            TEXT             NOT NULL,
    label           TEXT,
    UNIQUE (stream, version)
);

CREATE INDEX events_by_type_time ON events (type, recorded_at);
CREATE INDEX events_by_time ON events (recorded_at);
CREATE INDEX events_by_label_time ON events (label, recorded_at) WHERE label IS NOT NULL;

-- One row: the last committed position, its hash and recorded time. Every append
-- locks it (SELECT ... FOR UPDATE) before reading the head, so appends from every
-- process are serialised, and it is the high-water mark `verify` compares with.
CREATE TABLE log_head (
    id          INTEGER          PRIMARY KEY CHECK (id = 1),
    position    BIGINT           NOT NULL,
    hash        TEXT             NOT NULL,
    recorded_at DOUBLE PRECISION NOT NULL
);

INSERT INTO log_head (id, position, hash, recorded_at)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);

-- Projection checkpoints: the state of each read model and the position it covers.
CREATE TABLE snapshots (
    name        TEXT             PRIMARY KEY,
    version     INTEGER          NOT NULL,
    position    BIGINT           NOT NULL,
    state       BYTEA            NOT NULL,
    sha256      TEXT             NOT NULL,
    taken_at    DOUBLE PRECISION NOT NULL
);
