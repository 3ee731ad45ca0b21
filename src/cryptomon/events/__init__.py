"""The event log: event types, the SQLite event store, subscriptions and audits."""
