"""`etl-worker cdc-check --request FILE`: would a cdc run of this request start? The same checks
the run makes first (worker/cdc/postgres.py: wal_level, REPLICATION, replica identity, the
publication, the slot), printed, without creating or reading anything."""

from __future__ import annotations

from typing import TextIO

from worker.cdc import postgres as cdc_pg
from worker.classify import classify
from worker.errors import ConfigurationError, EtlError
from worker.logs import redact
from worker.messages import EtlRunRequest, decode_request
from worker.secrets import SecretResolver
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


def _readiness(request: EtlRunRequest, secrets: SecretResolver) -> cdc_pg.Readiness:
    specs = [spec for spec in request.table_specs() if spec.load_type == "cdc"]
    if len(specs) != 1 or len(request.table_specs()) != 1:
        raise ConfigurationError("cdc-check takes a request of one table with load_type cdc")
    spec, dialect = specs[0], PostgresDialect()
    engine = dialect.create_engine(secrets.resolved(request.connection_params))
    try:
        with engine.connect() as conn:
            return cdc_pg.readiness(conn, request.schema_name, spec, cdc_pg.names_of(request, spec),
                                    spec.primary_key or ())
    finally:
        engine.dispose()
