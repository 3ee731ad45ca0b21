-- Log queries (connection, failure, collection) pick events by a label derived
-- from the payload, newest first, through one index per label.
ALTER TABLE events ADD COLUMN label TEXT;

UPDATE events
SET label = json_extract(CAST(payload AS TEXT), '$.kind') || ':' ||
            CASE json_extract(CAST(payload AS TEXT), '$.outcome')
                WHEN 'success' THEN 'ok' ELSE 'fail' END
WHERE type = 'ProbeRecorded';

CREATE INDEX events_by_label_time ON events (label, recorded_at) WHERE label IS NOT NULL;

-- Projection checkpoints: the state of each read model and the position it covers.
CREATE TABLE snapshots (
    name        TEXT    PRIMARY KEY,
    version     INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    state       BLOB    NOT NULL,
    sha256      TEXT    NOT NULL,
    taken_at    REAL    NOT NULL
);
