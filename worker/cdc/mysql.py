"""MySQL/MariaDB's side of CDC: what the server must allow, and the binlog positions a run needs
(the consistent snapshot's, the current end, the oldest binary log still kept).

Positions are read only at transaction boundaries (worker/cdc/binlog.py). What is missing is
said once, as `CdcSetupError`, naming the change; a ledger position older than every binary log
the server keeps is `BinlogPurgedError`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from worker.cdc.binlog import BinlogPosition, decode_position, default_server_id, file_base, file_sequence
from worker.cdc.readiness import Readiness
from worker.errors import BinlogPurgedError, CdcSetupError
from worker.messages import EtlRunRequest, TableSpec

RESNAPSHOT_HOW = ('load the table again from a fresh snapshot: send its request once with '
                  '"cdc_resnapshot": true (e.g. etl-worker run --request FILE), then run it more often '
                  'than the binlog retention (binlog_expire_logs_seconds)')
LOCK_WAIT_S = 10
_SETTINGS = ("log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "version",
             "binlog_transaction_compression", "log_bin_compress")
# Compressed row events (MySQL's transaction payloads, MariaDB's compressed events) are not read.
_UNCOMPRESSED = ("binlog_transaction_compression", "log_bin_compress")
_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<target>\S+) TO ", re.IGNORECASE)


def server_id_of(request: EtlRunRequest, spec: TableSpec) -> int:
    return spec.cdc_server_id or default_server_id(request.data_source_id, spec.dest_table_name)


@dataclass(frozen=True)
class Server:
    settings: dict[str, str]  # lower-case names of _SETTINGS → their value ('' when the server lacks one)
    privileges: frozenset[str]  # global ones (ON *.*), upper case
    database_privileges: frozenset[str]  # on the request's database
    user: str

    @property
    def mariadb(self) -> bool:
        return "mariadb" in self.settings.get("version", "").lower()

    def has(self, *privileges: str, database: bool = False) -> bool:
        held = self.privileges | (self.database_privileges if database else frozenset())
        return "ALL PRIVILEGES" in held or any(privilege in held for privilege in privileges)


def server_facts(conn: sa.Connection, database: str | None) -> Server:
    names = ", ".join(f"'{name}'" for name in _SETTINGS)
    rows = conn.execute(sa.text(f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")).all()
    settings = {str(name).lower(): str(value) for name, value in rows}
    user = str(conn.execute(sa.text("SELECT CURRENT_USER()")).scalar_one())
    grants = [str(row[0]) for row in conn.execute(sa.text("SHOW GRANTS FOR CURRENT_USER()"))]
    return Server(settings, _privileges(grants, ("*.*",)),
                  _privileges(grants, (f"`{database}`.*", f"{database}.*") if database else ()), user)


def _privileges(grants: Sequence[str], targets: Sequence[str]) -> frozenset[str]:
    held: set[str] = set()
    for grant in grants:
        found = _GRANT.match(grant)
        if found and found.group("target").replace("\\_", "_") in targets:
            held.update(part.strip().upper() for part in found.group("privileges").split(","))
    return frozenset(held)


def readiness(conn: sa.Connection, database: str | None, spec: TableSpec, server_id: int) -> Readiness:
    """The binlog settings, the privileges and the table binlog CDC needs, each with its fix."""
    return readiness_of(conn, server_facts(conn, database), database, spec, server_id)


def readiness_of(conn: sa.Connection, server: Server, database: str | None, spec: TableSpec,
                 server_id: int) -> Readiness:
    problems = [*_setting_problems(server), *_privilege_problems(server, database),
                *_table_problems(conn, database, spec)]
    notes = [f"server_id {server_id} (cdc_server_id): must differ from every other replica's"]
    monitor = server.has("BINLOG MONITOR", "REPLICATION CLIENT", "SUPER")
    if server.settings.get("log_bin", "").upper() == "ON" and monitor:
        notes.append(f"binlog now at {current_position(conn)}, oldest kept: {oldest_binlog(conn)}")
    return Readiness(tuple(problems), tuple(notes))


def _setting_problems(server: Server) -> Iterator[str]:
    settings = server.settings
    if settings.get("log_bin", "").upper() != "ON":
        yield ("log_bin is OFF, CDC needs the binary log: start the server with log_bin (log-bin in my.cnf, "
               "then restart; Cloud SQL for MySQL: enable automated backups and point-in-time recovery)")
        return
    wanted = (("binlog_format", "ROW"), ("binlog_row_image", "FULL"), ("binlog_row_metadata", "FULL"))
    for name, value in wanted:
        current = settings.get(name)
        if current is None:
            yield (f"{name} does not exist on this server ({settings.get('version')}): binlog CDC needs "
                   "MariaDB 10.5 or later")
        elif current.upper() != value:
            yield (f"{name} is {current}, CDC needs {value}: run SET GLOBAL {name} = '{value}' and set it in "
                   f"my.cnf (Cloud SQL: the database flag {name}={value.lower()}); sessions opened "
                   "before keep the old value")
    for name in _UNCOMPRESSED:
        if settings.get(name, "OFF").upper() == "ON":
            yield (f"{name} is ON: the worker does not read compressed binlog events; run SET GLOBAL "
                   f"{name} = OFF and set it in my.cnf")


def _privilege_problems(server: Server, database: str | None) -> Iterator[str]:
    who = server.user
    missing = [name for name, aliases in (("REPLICATION SLAVE", ("REPLICATION REPLICA",)),
                                          ("BINLOG MONITOR" if server.mariadb else "REPLICATION CLIENT",
                                           ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER")))
               if not server.has(name, *aliases)]
    if missing:
        yield f"user {who} lacks {' and '.join(missing)}: run GRANT {', '.join(missing)} ON *.* TO {who}"
    if not server.mariadb and not server.has("RELOAD", "FLUSH_TABLES"):
        yield (f"user {who} lacks RELOAD: on MySQL a first run (and a cdc_resnapshot) opens its snapshot "
               "under FLUSH TABLES WITH READ LOCK, held only while it reads the binlog position (MariaDB "
               f"needs no lock): run GRANT RELOAD ON *.* TO {who}")
    if not server.has("CREATE TEMPORARY TABLES", database=True):
        target = f"`{database}`.*" if database else "the database"
        yield (f"user {who} lacks CREATE TEMPORARY TABLES (changes are converted in a temporary table of "
               f"the source's types): run GRANT CREATE TEMPORARY TABLES ON {target} TO {who}")


def _table_problems(conn: sa.Connection, database: str | None, spec: TableSpec) -> Iterator[str]:
    keys = conn.execute(sa.text(
        "SELECT COUNT(*), SUM(COLUMN_KEY = 'PRI') FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = "
        "COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"),
        {"schema": database, "table": spec.source_table_name}).one()
    if not keys[0]:
        yield f"source table {spec.source_table_name!r} not found in database {database!r}"
    elif not keys[1] and not spec.primary_key:
        yield (f"{spec.source_table_name} has no primary key, so no change can be applied by key: add "
               "one, or name the columns that identify a row in the request's primary_key")


# --- positions -------------------------------------------------------------------------------------
def current_position(conn: sa.Connection) -> BinlogPosition:
    """The end of the last transaction written to the binlog (SHOW MASTER STATUS; MySQL 8.4:
    SHOW BINARY LOG STATUS)."""
    try:
        row = conn.execute(sa.text("SHOW MASTER STATUS")).first()
    except sa.exc.ProgrammingError:
        row = conn.execute(sa.text("SHOW BINARY LOG STATUS")).first()
    if row is None:
        raise CdcSetupError("SHOW MASTER STATUS shows no binary log: start the server with log_bin")
    return BinlogPosition(str(row[0]), int(row[1]))


@contextlib.contextmanager
def global_read_lock(conn: sa.Connection) -> Iterator[None]:
    """MySQL's way to a snapshot matching a binlog position (mysqldump --single-transaction
    --source-data does the same): commits stop while the snapshot opens and the position is read.
    A lock not granted within LOCK_WAIT_S (a long statement running) fails the run transiently."""
    conn.execute(sa.text(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S}"))
    conn.execute(sa.text("FLUSH TABLES WITH READ LOCK"))
    try:
        yield
    finally:
        conn.execute(sa.text("UNLOCK TABLES"))  # releases the global lock; the snapshot stays open


def snapshot_position(conn: sa.Connection) -> BinlogPosition:
    """MariaDB: the binlog position the open consistent snapshot holds every transaction up to."""
    rows = {str(name): value for name, value in conn.execute(sa.text("SHOW STATUS LIKE 'binlog_snapshot_%'"))}
    file, offset = rows.get("Binlog_snapshot_file"), rows.get("Binlog_snapshot_position")
    if not file or offset is None:
        raise CdcSetupError("the server reports no binlog_snapshot_file: binlog CDC needs MariaDB with "
                            "log_bin")
    return BinlogPosition(str(file), int(offset))


def binary_logs(conn: sa.Connection) -> list[str]:
    return [str(row[0]) for row in conn.execute(sa.text("SHOW BINARY LOGS"))]


def oldest_binlog(conn: sa.Connection) -> str:
    logs = binary_logs(conn)
    return logs[0] if logs else "none"


def ledger_position(conn: sa.Connection, committed: int, end: BinlogPosition) -> BinlogPosition:
    """The ledger's integer as (file, offset) named like the server's files now; BinlogPurgedError
    when the server no longer keeps that file."""
    name = end.file
    digits = len(name) - len(file_base(name)) - 1
    start = decode_position(committed, file_base(name), digits)
    kept = [file_sequence(log) for log in binary_logs(conn) if file_base(log) == file_base(name)]
    if not kept or start.sequence < min(kept):
        oldest = f"{file_base(name)}.{min(kept):0{digits}d}" if kept else "none"
        raise BinlogPurgedError(
            f"the binlog no longer holds the changes after {start} (the oldest binary log kept is {oldest}): "
            f"they were purged before this table's next cdc run; {RESNAPSHOT_HOW}")
    return start
