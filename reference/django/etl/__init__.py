"""The Django side of etl-worker: requests out, events in, through Pub/Sub only (docs/events.md)."""
