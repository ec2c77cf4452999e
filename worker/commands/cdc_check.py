"""`etl-worker cdc-check --request FILE`: would a cdc run of this request start? The same checks
the run makes first, printed, without creating or reading anything: PostgreSQL's
(worker/cdc/postgres.py: wal_level, REPLICATION, replica identity, the publication, the slot) or
MySQL/MariaDB's (worker/cdc/mysql.py: log_bin, binlog_format, binlog_row_image,
binlog_row_metadata, replication privileges, the binlog position)."""

from __future__ import annotations

from typing import TextIO

from worker.cdc import mysql as cdc_my
from worker.cdc import postgres as cdc_pg
from worker.cdc.readiness import Readiness
from worker.classify import classify
from worker.errors import ConfigurationError, EtlError
from worker.logs import redact
from worker.messages import EtlRunRequest, TableSpec, decode_request
from worker.secrets import SecretResolver
from worker.sources.dialect import SqlDialect, driver_errors
from worker.sources.mysql import MySQLDialect
from worker.sources.postgresql import PostgresDialect


def cdc_check(data: bytes, secrets: SecretResolver, out: TextIO) -> int:
    """0: ready; 1: something to change (each printed with its fix); 2: the check could not run."""
    try:
        request = decode_request(data)
        readiness = _readiness(request, secrets)
    except Exception as exc:  # one line, classified and redacted like a run's error
        error = exc if isinstance(exc, EtlError) else classify(exc)
        print(f"cdc-check: {error.type_name}: {redact(str(error))}", file=out)
        return 2
    for problem in readiness.problems:
        print(f"problem: {problem}", file=out)
    for note in readiness.notes:
        print(f"note: {note}", file=out)
    print("ready: a cdc run can start" if not readiness.problems else
          f"not ready: {len(readiness.problems)} thing(s) to change", file=out)
    return 1 if readiness.problems else 0


def _readiness(request: EtlRunRequest, secrets: SecretResolver) -> Readiness:
    specs = [spec for spec in request.table_specs() if spec.load_type == "cdc"]
    if len(specs) != 1 or len(request.table_specs()) != 1:
        raise ConfigurationError("cdc-check takes a request of one table with load_type cdc")
    spec = specs[0]
    dialect: SqlDialect = MySQLDialect() if request.source_type == "mysql" else PostgresDialect()
    engine = dialect.create_engine(secrets.resolved(request.connection_params))
    try:
        with driver_errors(dialect), engine.connect() as conn:
            return _checks(conn, request, spec)
    finally:
        engine.dispose()


def _checks(conn: object, request: EtlRunRequest, spec: TableSpec) -> Readiness:
    import sqlalchemy as sa

    assert isinstance(conn, sa.Connection)
    if request.source_type == "mysql":
        database = request.schema_name or request.connection_params.database
        return cdc_my.readiness(conn, database, spec, cdc_my.server_id_of(request, spec))
    return cdc_pg.readiness(conn, request.schema_name, spec, cdc_pg.names_of(request, spec),
                            spec.primary_key or ())
