"""PostgreSQL's side of CDC: what the server must allow, the publication, the slot and its
exported snapshot, the end position, and advancing the slot once a run is committed.

Everything here is a few catalog queries or replication commands on connections the source
already has (SQLAlchemy for SQL, psycopg2's LogicalReplicationConnection for
CREATE_REPLICATION_SLOT). What is missing is said once, as `CdcSetupError`, naming the change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extras
import sqlalchemy as sa

from worker.cdc.lsn import format_lsn, parse_lsn
from worker.cdc.meta import checked_name, default_name
from worker.cdc.readiness import Readiness
from worker.messages import EtlRunRequest, TableSpec

log = logging.getLogger(__name__)
PLUGIN = "pgoutput"
EXPORT_SYNTAX_VERSION = 150000  # PostgreSQL 15: CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')


@dataclass(frozen=True)
class CdcNames:
    slot: str
    publication: str


def names_of(request: EtlRunRequest, spec: TableSpec) -> CdcNames:
    """The request's cdc_slot / cdc_publication, else the stable names of data source + table."""
    default = default_name(request.data_source_id, spec.dest_table_name)
    return CdcNames(checked_name("cdc_slot", spec.cdc_slot or default),
                    checked_name("cdc_publication", spec.cdc_publication or default))


@dataclass(frozen=True)
class TableFacts:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # relreplident
    identity_columns: tuple[str, ...]  # the columns the change log identifies a row by ('f': none)
    owned: bool  # the user may create a publication for it


@dataclass(frozen=True)
class PublicationFacts:
    publishes: tuple[str, ...]  # of insert, update, delete, truncate
    has_table: bool


@dataclass(frozen=True)
class SlotState:
    confirmed_flush: int | None
    wal_status: str | None  # reserved, extended, unreserved, lost
    plugin: str | None
    database: str | None
    retained_wal_bytes: int | None  # WAL the server keeps for this slot (from restart_lsn)

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or self.confirmed_flush is None


# --- checks ----------------------------------------------------------------------------------------
_SERVER_SQL = sa.text(
    "SELECT current_setting('wal_level') AS wal_level, r.rolreplication, r.rolsuper, current_user AS who, "
    "current_setting('max_replication_slots')::int AS max_slots, "
    "current_setting('server_version_num')::int AS version, "
    "has_database_privilege(current_database(), 'CREATE') AS may_create "
    "FROM pg_roles r WHERE r.rolname = current_user")
_TABLE_SQL = sa.text(
    "SELECT c.oid, n.nspname, c.relname, c.relreplident, pg_has_role(c.relowner, 'USAGE') AS owned "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = to_regclass(format('%I.%I', COALESCE(:schema, current_schema()), :table))")
_INDEX_COLUMNS_SQL = sa.text(
    "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) "
    "ON TRUE JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
    "WHERE i.indrelid = :oid AND (CASE WHEN :identity = 'i' THEN i.indisreplident ELSE i.indisprimary END) "
    "ORDER BY k.pos")
_PUBLICATION_SQL = sa.text(
    "SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, EXISTS (SELECT 1 FROM "
    "pg_publication_tables t WHERE t.pubname = p.pubname AND t.schemaname = :namespace AND "
    "t.tablename = :table) AS has_table FROM pg_publication p WHERE p.pubname = :publication")
_SLOT_SQL = sa.text(
    "SELECT confirmed_flush_lsn::text AS confirmed, wal_status, plugin, database, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained "
    "FROM pg_replication_slots WHERE slot_name = :slot")
_OPS = ("insert", "update", "delete", "truncate")


def readiness(conn: sa.Connection, schema: str | None, spec: TableSpec, names: CdcNames,
              key: Sequence[str]) -> Readiness:
    """The server settings, privileges, replica identity and publication CDC needs."""
    server = conn.execute(_SERVER_SQL).mappings().one()
    problems = list(_server_problems(server))
    table = table_facts(conn, schema, spec.source_table_name)
    if table is None:
        return Readiness((*problems, f"source table {spec.source_table_name!r} not found"), ())
    problems += _identity_problems(table, key)
    publication = publication_facts(conn, names.publication, table)
    problems += _publication_problems(publication, names.publication, table, bool(server["may_create"]))
    slot = slot_state(conn, names.slot)
    notes = [f"slot {names.slot}: " + ("not created yet (the first run creates it and loads the table)"
                                       if slot is None else _slot_note(slot))]
    if slot is not None and (slot.plugin != PLUGIN or slot.database != _database(conn)):
        problems.append(f"replication slot {names.slot!r} exists for another plugin or database "
                        f"({slot.plugin}, {slot.database}): give the request another cdc_slot")
    return Readiness(tuple(problems), tuple(notes))


def _server_problems(server: Any) -> Iterator[str]:
    if server["wal_level"] != "logical":
        yield (f"wal_level is {server['wal_level']}, CDC needs logical: run ALTER SYSTEM SET wal_level = "
               "logical and restart PostgreSQL (Cloud SQL: set the flag cloudsql.logical_decoding=on)")
    if not (server["rolreplication"] or server["rolsuper"]):
        yield (f"user {server['who']!r} has neither REPLICATION nor superuser: run ALTER ROLE "
               f"\"{server['who']}\" WITH REPLICATION (Amazon RDS: GRANT rds_replication TO "
               f"\"{server['who']}\")")
    if server["max_slots"] < 1:
        yield "max_replication_slots is 0: set it to at least 1 and restart PostgreSQL"


def _identity_problems(table: TableFacts, key: Sequence[str]) -> Iterator[str]:
    qualified = f"{table.namespace}.{table.name}"
    if table.replica_identity == "f":
        return
    if table.replica_identity == "n" or not table.identity_columns:
        yield (f"{qualified} has no replica identity, so the change log cannot say which row an update or "
               f"delete touched: add a primary key, or run ALTER TABLE {qualified} REPLICA IDENTITY FULL")
    elif key and set(key) != set(table.identity_columns):
        yield (f"primary_key {list(key)} is not the replica identity of {qualified} "
               f"({list(table.identity_columns)}): use that key, or ALTER TABLE {qualified} REPLICA "
               "IDENTITY FULL")


def _publication_problems(publication: PublicationFacts | None, name: str, table: TableFacts,
                          may_create: bool) -> Iterator[str]:
    qualified = f"{table.namespace}.{table.name}"
    may = table.owned and may_create
    if publication is None and not may:
        yield (f"publication {name!r} does not exist and this user may not create it: run, as the owner of "
               f"{qualified}, CREATE PUBLICATION {name} FOR TABLE {qualified}")
    elif publication is not None and not publication.has_table and not table.owned:
        yield (f"publication {name!r} does not include {qualified}: run, as its owner, ALTER PUBLICATION "
               f"{name} ADD TABLE {qualified}")
    elif publication is not None and set(publication.publishes) != set(_OPS):
        yield (f"publication {name!r} publishes only {', '.join(publication.publishes) or 'nothing'}: run "
               f"ALTER PUBLICATION {name} SET (publish = '{', '.join(_OPS)}')")


def _slot_note(slot: SlotState) -> str:
    if slot.lost:
        return "lost (invalidated): the next run reloads the table"
    retained = f"{slot.retained_wal_bytes / 2**20:.1f} MiB" if slot.retained_wal_bytes is not None else "?"
    return f"at {format_lsn(slot.confirmed_flush or 0)}, retaining {retained} of WAL"


def table_facts(conn: sa.Connection, schema: str | None, table: str) -> TableFacts | None:
    row = conn.execute(_TABLE_SQL, {"schema": schema, "table": table}).mappings().one_or_none()
    if row is None:
        return None
    identity = str(row["relreplident"])
    columns: tuple[str, ...] = ()
    if identity in ("d", "i"):
        found = conn.execute(_INDEX_COLUMNS_SQL, {"oid": row["oid"], "identity": identity}).scalars()
        columns = tuple(str(name) for name in found)
    return TableFacts(int(row["oid"]), str(row["nspname"]), str(row["relname"]), identity, columns,
                      bool(row["owned"]))


def publication_facts(conn: sa.Connection, name: str, table: TableFacts) -> PublicationFacts | None:
    row = conn.execute(_PUBLICATION_SQL, {"publication": name, "namespace": table.namespace,
                                          "table": table.name}).mappings().one_or_none()
    if row is None:
        return None
    publishes = tuple(op for op in _OPS if row[f"pub{op}"])
    return PublicationFacts(publishes, bool(row["has_table"]))


def slot_state(conn: sa.Connection, slot: str) -> SlotState | None:
    row = conn.execute(_SLOT_SQL, {"slot": slot}).mappings().one_or_none()
    if row is None:
        return None
    confirmed = parse_lsn(row["confirmed"]) if row["confirmed"] else None
    retained = int(row["retained"]) if row["retained"] is not None else None
    return SlotState(confirmed, row["wal_status"], row["plugin"], row["database"], retained)


def _database(conn: sa.Connection) -> str:
    return str(conn.execute(sa.text("SELECT current_database()")).scalar_one())


# --- changes to the server -----------------------------------------------------------------------------
def ensure_publication(conn: sa.Connection, name: str, table: TableFacts) -> None:
    """Create the publication for the table, or add the table to it (first run; before the slot:
    pgoutput reads the publication as of each change, so it must exist before the first one)."""
    quote = conn.dialect.identifier_preparer.quote
    qualified = f"{quote(table.namespace)}.{quote(table.name)}"
    facts = publication_facts(conn, name, table)
    if facts is None:
        conn.execute(sa.text(f"CREATE PUBLICATION {quote(name)} FOR TABLE {qualified}"))
        log.info("created publication %s for %s.%s", name, table.namespace, table.name)
    elif not facts.has_table:
        conn.execute(sa.text(f"ALTER PUBLICATION {quote(name)} ADD TABLE {qualified}"))
        log.info("added %s.%s to publication %s", table.namespace, table.name, name)
    conn.commit()


def drop_slot(conn: sa.Connection, slot: str) -> None:
    """A slot whose changes the ledger does not follow (a first run that did not commit, a lost
    slot): the run starts over from a fresh snapshot."""
    conn.execute(sa.text("SELECT pg_drop_replication_slot(:slot)"), {"slot": slot})
    conn.commit()
    log.warning("dropped replication slot %s: the table is loaded again from a fresh snapshot", slot)


def advance_slot(conn: sa.Connection, slot: str, position: int) -> None:
    """Move the slot to `position` (only forward): the server may then recycle the WAL before it."""
    state = slot_state(conn, slot)
    if state is None or state.confirmed_flush is None or state.confirmed_flush >= position:
        conn.rollback()
        return
    conn.execute(sa.text("SELECT pg_replication_slot_advance(:slot, CAST(:lsn AS pg_lsn))"),
                 {"slot": slot, "lsn": format_lsn(position)})
    conn.commit()
    log.info("replication slot %s advanced to %s", slot, format_lsn(position))


def current_lsn(conn: sa.Connection) -> int:
    return parse_lsn(str(conn.execute(sa.text("SELECT pg_current_wal_lsn()::text")).scalar_one()))


@dataclass(frozen=True)
class ExportedSlot:
    consistent_point: int  # changes committed from here on are decoded; the snapshot holds the rest
    snapshot_name: str  # valid while the replication connection stays open and idle


@contextlib.contextmanager
def exported_slot(url: sa.URL, slot: str, server_version: int) -> Iterator[ExportedSlot]:
    """Create the slot on a replication connection, exporting its snapshot; keep that connection
    open (and idle) until the caller has read the table in the snapshot."""
    args = url.translate_connect_args(username="user", database="dbname")
    conn = psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection,
                            connect_timeout=10, application_name="etl-worker cdc", **args)
    try:
        option = "(SNAPSHOT 'export')" if server_version >= EXPORT_SYNTAX_VERSION else "EXPORT_SNAPSHOT"
        with conn.cursor() as cur:
            cur.execute(f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL {PLUGIN} {option}')
            _name, point, snapshot, _plugin = cur.fetchone()
        log.info("created replication slot %s at %s (snapshot %s)", slot, point, snapshot)
        yield ExportedSlot(parse_lsn(point), snapshot)
    finally:
        conn.close()


def server_version(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT current_setting('server_version_num')::int")).scalar_one())
