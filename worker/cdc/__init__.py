"""Log-based change data capture (`load_type: cdc`): PostgreSQL logical decoding with `pgoutput`,
and the MySQL/MariaDB row-based binlog.

A CDC run is an ordinary bounded run (docs/cdc.md): the first one loads the table from a snapshot
exported by the slot it creates (MySQL/MariaDB: a consistent snapshot and the binlog position it
matches); every later one reads the changes that committed between the ledger's last position and
a position fixed at its start, and commits them with the new position in one BigQuery
transaction; only then is the slot advanced (the binlog has none: the ledger is the position).

| module | its one job |
|---|---|
| `lsn` | LSN text ⇄ integer |
| `pgoutput` | decode pgoutput protocol-1 messages (pure) |
| `changes` | turn decoded messages into the staged changes of one table (pure) |
| `meta` | the staged change columns, slot and publication names |
| `postgres` | server checks, slot and publication, the exported snapshot, advancing |
| `binlog` | binlog positions, the default server id, which transactions a run keeps (pure) |
| `binlog_stream` | python-mysql-replication's events as `binlog`'s: one dump, never reconnected |
| `mysql` | MySQL/MariaDB checks, the snapshot's and the current binlog position, purged logs |
| `readiness` | what `cdc-check` prints and a run checks first |
"""
