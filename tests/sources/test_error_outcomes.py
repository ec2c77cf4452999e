"""Real drivers' errors → the documented outcome (README's outcome table), as the runner sees them.

Each case makes a real source fail the way an operator's request can: a closed port, a wrong
password (against the password-checking PostgreSQL), a missing database, table or column, a type or
a value BigQuery cannot hold, a bad name or file. The exception that leaves the source is what the
runner classifies; its verdict must be the documented one. `tests/unit/test_classify.py` has the
same table for constructed exceptions (BigQuery, Secret Manager, the commit script).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from devstack.emulators import free_port
from tests.conftest import unique
from tests.sources import connection_of, make_request
from tests.unit.test_classify import PERMANENT, TRANSIENT, _readme_outcome_phrases
from worker import errors
from worker.classify import classify
from worker.messages import EtlRunRequest
from worker.sources import get_source

# Real drivers against real servers, reached through fixtures chosen per case (getfixturevalue).
pytestmark = pytest.mark.services

Build = Callable[[pytest.FixtureRequest], EtlRunRequest]


@dataclass(frozen=True)
class RealCase:
    name: str
    documented: str  # the README's words for it, or the error class's name
    build: Build  # the request that fails, built from the test's fixtures
    expected: type[errors.EtlError]
    outcome: str


# --- requests that fail --------------------------------------------------------------------------
def _pg(fixtures: pytest.FixtureRequest, table: str = "t", setup: str = "", **fields: Any) -> EtlRunRequest:
    admin: sa.Engine = fixtures.getfixturevalue("pg_admin")
    schema: str = fixtures.getfixturevalue("pg_schema")
    if setup:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{schema}"; {setup}')
    connection = fields.pop("connection", {})
    return make_request("postgresql", connection_of(admin, **connection), table, schema_name=schema, **fields)


def _pg_wrong_password(fixtures: pytest.FixtureRequest) -> EtlRunRequest:
    server = fixtures.getfixturevalue("password_pg")
    connection = {"host": "127.0.0.1", "port": server.port, "database": "postgres", "username": "postgres",
                  "password": "not-the-password"}
    return make_request("postgresql", connection, "t")


def _my(fixtures: pytest.FixtureRequest, table: str = "t", **connection: Any) -> EtlRunRequest:
    admin: sa.Engine = fixtures.getfixturevalue("mysql_admin")
    database: str = fixtures.getfixturevalue("mysql_db")
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS `{database}`.t (a int)")
    return make_request("mysql", connection_of(admin, **{"database": database, **connection}), table)


def _lite(fixtures: pytest.FixtureRequest, content: bytes | None, table: str = "t") -> EtlRunRequest:
    path: Path = fixtures.getfixturevalue("sqlite_path")
    if content is not None:
        path.write_bytes(content)
    return make_request("sqlite", {"database": str(path)}, table)


def _lite_with_table(fixtures: pytest.FixtureRequest) -> EtlRunRequest:
    path: Path = fixtures.getfixturevalue("sqlite_path")
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")
    engine.dispose()
    return make_request("sqlite", {"database": str(path)}, "nope")


def _closed_port() -> int:
    return free_port()  # nothing listens there


CASES = [
    RealCase("pg closed port", "database or BigQuery unavailable",
             lambda f: _pg(f, connection={"port": _closed_port()}), errors.SourceConnectionError, TRANSIENT),
    RealCase("pg wrong password", "bad credentials", _pg_wrong_password, errors.SourceAuthError, PERMANENT),
    RealCase("pg unknown role", "bad credentials",
             lambda f: _pg(f, connection={"username": unique("nobody")}), errors.SourceAuthError, PERMANENT),
    RealCase("pg missing database", "unknown table/column",
             lambda f: _pg(f, connection={"database": unique("nodb")}), errors.SourceSchemaError, PERMANENT),
    RealCase("pg missing table", "unknown table/column", lambda f: _pg(f, "nope"), errors.SourceSchemaError,
             PERMANENT),
    RealCase("pg missing column", "unknown table/column",
             lambda f: _pg(f, setup="CREATE TABLE t (a int)", selected_columns=["a", "ghost"]),
             errors.SourceSchemaError, PERMANENT),
    RealCase("pg unsupported type", "incompatible schema", lambda f: _pg(f, setup="CREATE TABLE t (p point)"),
             errors.UnsupportedTypeError, PERMANENT),
    RealCase("pg strict types", "SourceDataError",
             lambda f: _pg(f, setup="CREATE TABLE t (d date); INSERT INTO t VALUES ('infinity')",
                           strict_types=True), errors.SourceDataError, PERMANENT),
    RealCase("pg text cursor", "invalid request",
             lambda f: _pg(f, setup="CREATE TABLE t (c text)", timestamp_column="c"),
             errors.ConfigurationError, PERMANENT),
    RealCase("mysql closed port", "database or BigQuery unavailable",
             lambda f: _my(f, port=_closed_port()), errors.SourceConnectionError, TRANSIENT),
    RealCase("mysql wrong password", "bad credentials", lambda f: _my(f, password="not-the-password"),
             errors.SourceAuthError, PERMANENT),
    RealCase("mysql missing database", "unknown table/column", lambda f: _my(f, database=unique("nodb")),
             errors.SourceSchemaError, PERMANENT),
    RealCase("mysql missing table", "unknown table/column", lambda f: _my(f, "nope"),
             errors.SourceSchemaError, PERMANENT),
    RealCase("mysql invalid name", "invalid request", lambda f: _my(f, "a" * 70), errors.ConfigurationError,
             PERMANENT),
    RealCase("sqlite missing file", "invalid request", lambda f: _lite(f, None), errors.ConfigurationError,
             PERMANENT),
    RealCase("sqlite not a database", "invalid request", lambda f: _lite(f, b"not a database " * 100),
             errors.ConfigurationError, PERMANENT),
    RealCase("sqlite missing table", "unknown table/column", _lite_with_table, errors.SourceSchemaError,
             PERMANENT),
]


def failure_of(request: EtlRunRequest) -> BaseException:
    """What leaves the source when the runner opens, counts and reads this request."""
    with (
        pytest.raises(Exception) as caught,  # any exception: classify() decides
        get_source(request.source_type).snapshot(request) as snapshot,
    ):
        snapshot.count_rows(None)
        for _batch in snapshot.iter_batches(None, 100):
            pass
    return caught.value


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_real_driver_errors_have_their_documented_outcome(case: RealCase, request: pytest.FixtureRequest
                                                          ) -> None:
    error = classify(failure_of(case.build(request)))
    assert type(error) is case.expected, str(error)
    # permanent: run.failed with retryable false, then ack; transient: retryable true, then nack
    assert error.retryable is (case.outcome == TRANSIENT)


def test_each_case_names_what_the_readme_says_of_it() -> None:
    documented = _readme_outcome_phrases()
    for case in CASES:
        if case.documented in documented:
            assert documented[case.documented] == case.outcome, case.name
        else:  # not a failure the README lists by name: its error class says it
            assert case.documented == case.expected.__name__, case.name
