"""Operator commands: `setup` (topology), `replay`, `runs`, `watch`. They read events, the ledger and
the dead-letter hold subscription; none of them imports the runner."""
