-- The append-only event log. `position` is the global order (AUTOINCREMENT so a
-- position is never reused, even after the last row is deleted); `hash` chains
-- each row to the one before it.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL UNIQUE,
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    type            TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    recorded_at     REAL    NOT NULL,
    payload         BLOB    NOT NULL,
    correlation_id  TEXT,
    causation_id    TEXT,
    actor           TEXT,
    hash            TEXT    NOT NULL,
    UNIQUE (stream, version)
);

CREATE INDEX events_by_type_time ON events (type, recorded_at);
CREATE INDEX events_by_time ON events (recorded_at);
