-- Snapshot rows are kept per instance (the service's `[instance] name`), so instances
-- on one log, each folding with its own settings, never overwrite each other's. Rows
-- from before belong to the instance named '' (any instance may start from them).
ALTER TABLE snapshots ADD COLUMN instance TEXT NOT NULL DEFAULT '';
ALTER TABLE snapshots DROP CONSTRAINT snapshots_pkey;
ALTER TABLE snapshots ADD PRIMARY KEY (instance, name);
