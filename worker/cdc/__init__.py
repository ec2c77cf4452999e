"""Log-based change data capture (`load_type: cdc`): PostgreSQL logical decoding with `pgoutput`.

A CDC run is an ordinary bounded run (docs/cdc.md): the first one loads the table from a snapshot
exported by the slot it creates; every later one reads the changes that committed between the
ledger's last position and a position fixed at its start, and commits them with the new position
in one BigQuery transaction; only then is the slot advanced.

| module | its one job |
|---|---|
| `lsn` | LSN text ⇄ integer |
| `pgoutput` | decode pgoutput protocol-1 messages (pure) |
| `changes` | turn decoded messages into the staged changes of one table (pure) |
| `meta` | the staged change columns, slot and publication names |
| `postgres` | server checks, slot and publication, the exported snapshot, advancing |
"""
