"""Fixtures for the real services: Pub/Sub emulator, BigQuery emulator, PostgreSQL, MariaDB, SQLite.

Emulators start once per session on free ports; every test gets its own PostgreSQL schema, MariaDB
database, BigQuery dataset and Pub/Sub names (uuid-suffixed), dropped afterwards. Under pytest-xdist
(`make test` runs `-n 4`) a session is one worker process: each worker starts its own emulators.

Tests whose fixtures reach a service are marked `services` at collection; `make test-unit` runs the
others (`-m "not services"`) with ETL_TEST_NO_SERVICES=1, which makes any service fixture fail loudly
instead of quietly connecting. Under xdist the longest tests are scheduled first (tests/schedule.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import Emulator, start_bigquery, start_pubsub
from devstack.logical_postgres import LogicalPostgres, logical_postgres
from devstack.private_mariadb import PrivateMariaDB, binlog_mariadb
from tests.password_postgres import PasswordPostgres, password_postgres
from tests.schedule import expected_seconds
from worker.sinks.bigquery_client import make_bigquery_client

PROJECT = "etl-test"
PG_ADMIN_URL = os.environ.get("ETL_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("ETL_TEST_MYSQL_URL", "mysql+mysqldb://root@127.0.0.1:3306/test")


# Fixtures that reach a real service (directly; fixtures built on them inherit the mark).
SERVICE_FIXTURES = frozenset({
    "pubsub_emulator", "fresh_pubsub_emulator", "bq_emulator", "pg_admin", "mysql_admin", "password_pg",
    "logical_pg", "binlog_maria",
})
# Tests that reach services without such a fixture (a subprocess connects by itself).
SERVICE_TESTS = ("tests/test_bench_smoke.py::",)
NO_SERVICES_ENV = "ETL_TEST_NO_SERVICES"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SERVICE_FIXTURES or item.nodeid.startswith(SERVICE_TESTS):
            item.add_marker(pytest.mark.services)
    if hasattr(config, "workerinput"):  # an xdist worker: longest first (every worker sorts alike)
        order = {item.nodeid: index for index, item in enumerate(items)}
        items.sort(key=lambda item: (-expected_seconds(item.nodeid), order[item.nodeid]))


def _require_services(what: str) -> None:
    if os.environ.get(NO_SERVICES_ENV) == "1":
        pytest.fail(f"{what} requested under {NO_SERVICES_ENV}=1 (make test-unit): this test needs "
                    "services; request a service fixture statically or mark it @pytest.mark.services",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _close_event_streams() -> Iterator[None]:
    yield
    from tests.e2e.stack import close_open_stacks  # late: the stack module imports this one

    close_open_stacks()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --- emulators ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def emulator_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-logs")


@contextlib.contextmanager
def _pubsub_host(emulator: Emulator) -> Iterator[None]:
    """Clients made without an explicit endpoint (pubsub_v1.*Client()) talk to `emulator`."""
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host_port
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


@pytest.fixture(scope="session")
def pubsub_emulator(emulator_logs: Path) -> Iterator[Emulator]:
    """One Pub/Sub emulator per session (per xdist worker); tests use unique topics on it."""
    _require_services("the Pub/Sub emulator")
    emulator = start_pubsub(PROJECT, emulator_logs)
    try:
        with _pubsub_host(emulator):
            yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def fresh_pubsub_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A Pub/Sub emulator of this test's own (about 2 s to start), for tests that kill subscribers:
    the emulator's dead-stream bug cannot reach later tests. Use it in place of `pubsub_emulator`;
    PUBSUB_EMULATOR_HOST points at it for the test, and event streams are closed before it stops."""
    _require_services("a fresh Pub/Sub emulator")
    logs = tmp_path / "pubsub-emulator-logs"
    logs.mkdir()
    emulator = start_pubsub(PROJECT, logs)
    try:
        with _pubsub_host(emulator):
            yield emulator
            from tests.e2e.stack import close_open_stacks  # late: the stack module imports this one

            close_open_stacks()
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def bq_emulator(emulator_logs: Path) -> Iterator[Emulator]:
    _require_services("the BigQuery emulator")
    emulator = start_bigquery(PROJECT, emulator_logs)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def bq_client(bq_emulator: Emulator) -> bigquery.Client:
    return make_bigquery_client(PROJECT, bq_emulator.host_port)


@pytest.fixture
def bq_dataset(bq_client: bigquery.Client) -> Iterator[str]:
    """A fresh dataset id for this test (not created: the worker creates what it needs)."""
    dataset_id = unique("ds")
    try:
        yield dataset_id
    finally:
        bq_client.delete_dataset(f"{PROJECT}.{dataset_id}", delete_contents=True, not_found_ok=True)


# --- source databases --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    _require_services("PostgreSQL")
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_schema(pg_admin: sa.Engine) -> Iterator[str]:
    """A fresh PostgreSQL schema in database `test`, dropped afterwards."""
    name = unique("s")
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        yield name
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))


@pytest.fixture(scope="session")
def mysql_admin() -> Iterator[sa.Engine]:
    _require_services("MariaDB")
    engine = sa.create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"MariaDB is not reachable at {MYSQL_ADMIN_URL}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def mysql_db(mysql_admin: sa.Engine) -> Iterator[str]:
    """A fresh MariaDB database (MySQL's 'schema'), dropped afterwards."""
    name = unique("d")
    with mysql_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield name
    finally:
        with mysql_admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE `{name}`"))


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "source.sqlite"


@pytest.fixture(scope="session")
def password_pg() -> Iterator[PasswordPostgres]:
    """A throwaway PostgreSQL that checks passwords (the machine's one trusts 127.0.0.1)."""
    _require_services("the password-checking PostgreSQL")
    with password_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def logical_pg() -> Iterator[LogicalPostgres]:
    """A throwaway PostgreSQL with wal_level=logical, for CDC (one per xdist worker)."""
    _require_services("the logical-decoding PostgreSQL")
    with logical_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def binlog_maria() -> Iterator[PrivateMariaDB]:
    """A throwaway MariaDB with a ROW binlog, for binlog CDC (one per xdist worker)."""
    _require_services("the binlog MariaDB")
    with binlog_mariadb() as server:
        yield server
