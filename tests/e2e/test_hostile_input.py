"""Hostile and broken input, generated (hypothesis): 1,050 requests to the handler, a few through Pub/Sub.

Every message must end as `run.failed`: permanent and acked, or (only when the source cannot be
reached) transient and nacked, for Pub/Sub to retry and dead-letter. The handler never raises and
never hangs; every SQL statement the sources send keeps hostile names inside quotes (checked on the
statements themselves, recorded through SQLAlchemy's engine events); the source's canary tables and
the BigQuery dataset are untouched.

The bulk drives the handler directly (built with `build_handler`, real PostgreSQL, MariaDB and
BigQuery emulator behind it, a MemoryEventBus), derandomized so every run tries the same examples.
Hosts are only ever 127.0.0.1 or localhost: no traffic may leave the loopback interface.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from google.api_core.exceptions import NotFound
from google.cloud import bigquery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.emulators import Emulator, free_port
from tests.conftest import PROJECT
from tests.e2e.stack import Stack, make_settings, serving
from tests.e2e.test_replay import wait_dead_letters
from worker.app import build_handler
from worker.events import MemoryEventBus
from worker.handlers.base import Delivery, Outcome
from worker.handlers.etl_run_requested import EtlRunRequestedHandler
from worker.messages import RunFailed

EXAMPLE_TIMEOUT_S = 30.0
CANARIES = ("x", "users")
CANARY_COLUMNS = ("id", "note")
CANARY_ROWS = 3
BOOKKEEPING = {"_etl_ledger", "_etl_heads"}
# Identifiers an attacker would try: statement breaks, comments, every quote, look-alikes.
PAYLOADS = (
    "users; DROP TABLE x", "x; DROP TABLE users; --", "x' OR '1'='1", "x'; DROP TABLE x; --",
    'x"; DROP TABLE x; --', 'x""; DROP TABLE x; --', "x`; DROP TABLE x; --", "x``; DROP TABLE x; --",
    "`x`", '"x"', "'x'", "[x]", "x\\", "x\\'; DROP TABLE x; --", "x -- comment", "x /* c */", "*/ x",
    "%s", "%(x)s", ":x", "?", "$1", "x)", "(SELECT 1)", "x UNION SELECT * FROM users",
    "information_schema.tables", "pg_catalog.pg_authid", "mysql.user", "../x", "x.users", ".x", "x.",
    "\uff55sers", "u\u0455ers", "\uff58", "\u0445", "x\u200b", "\u202ex", "x\u2028", "🙂", "x" * 128,
    "X", "USERS", " x",
    "x ", "' ; SHUTDOWN; --", "x'||pg_sleep(30)||'", "x' AND SLEEP(30) AND '1",
)
OK_TYPES = ("postgresql", "mysql", "sqlite")


# --- the world the handler runs in -----------------------------------------------------------------
@dataclass(repr=False)
class World:
    handler: EtlRunRequestedHandler
    bus: MemoryEventBus
    pg: dict[str, Any]
    mysql: dict[str, Any]
    closed_ports: tuple[int, ...]
    statements: list[tuple[str, str]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def base(self, dialect: str, table: str = "no_such_table_base", **overrides: Any) -> dict[str, Any]:
        params = self.pg if dialect == "postgresql" else self.mysql
        body: dict[str, Any] = {
            "data_source_id": 1, "source_type": dialect, "connection_params": dict(params["connection"]),
            "schema_name": params["schema"], "source_table_name": table, "dest_table_name": "fuzzed",
            "load_type": "catalog"}
        body.update(overrides)
        return body


def closed_port() -> int:
    """A 127.0.0.1 port where nothing listens (connection refused, at once)."""
    port = free_port()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    return port


def create_canaries(engine: sa.Engine, schema: str, quote: str) -> None:
    with engine.begin() as conn:
        for table in CANARIES:
            name = f"{quote}{schema}{quote}.{quote}{table}{quote}"
            conn.execute(sa.text(f"CREATE TABLE {name} (id int, note varchar(20))"))
            conn.execute(sa.text(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b'), (3, 'c')"))


def tables_and_rows(engine: sa.Engine, schema: str) -> dict[str, int]:
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names(schema=schema)
        table = {name: sa.table(name, schema=schema) for name in names}
        return {name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for name, t in table.items()}


@pytest.fixture
def world(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, pg_admin: sa.Engine,
          pg_schema: str, mysql_admin: sa.Engine, mysql_db: str,
          bq_client: bigquery.Client) -> Iterator[World]:
    create_canaries(pg_admin, pg_schema, '"')
    create_canaries(mysql_admin, mysql_db, "`")
    app_settings = make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                                 ETL_MAX_RETRIES=1, ETL_RETRY_DELAY=0)
    bus = MemoryEventBus()
    pg_url, my_url = pg_admin.url, mysql_admin.url
    world = World(
        handler=build_handler(app_settings, bus), bus=bus,
        pg={"schema": pg_schema, "connection": {"host": "127.0.0.1", "port": pg_url.port,
                                                "database": pg_url.database, "username": pg_url.username}},
        mysql={"schema": mysql_db, "connection": {"host": "127.0.0.1", "port": my_url.port,
                                                  "database": mysql_db, "username": my_url.username}},
        closed_ports=(1, closed_port()),
    )

    def record(conn: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        world.statements.append((conn.dialect.name, statement))

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        yield world
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)
    # The source is untouched: the canaries are all there, with all their rows, and nothing else.
    expected = dict.fromkeys(CANARIES, CANARY_ROWS)
    assert tables_and_rows(pg_admin, pg_schema) == expected
    assert tables_and_rows(mysql_admin, mysql_db) == expected
    # The destination is untouched: no table but the worker's bookkeeping, and no committed run.
    try:
        tables = {t.table_id for t in bq_client.list_tables(f"{PROJECT}.{bq_dataset}")}
    except NotFound:
        tables = set()
    assert tables <= BOOKKEEPING, tables
    if "_etl_ledger" in tables:
        ledger = f"`{PROJECT}.{bq_dataset}._etl_ledger`"
        assert next(iter(bq_client.query(f"SELECT COUNT(*) AS n FROM {ledger}").result()))["n"] == 0


# --- the one check every example goes through ------------------------------------------------------
def assert_rejected(world: World, data: bytes | dict[str, Any], *, may_be_transient: bool) -> None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    seen, statements_before = len(world.bus.events), len(world.statements)
    delivery = Delivery(data=raw, message_id=f"fuzz-{next(world.counter)}")
    outcome: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: outcome.append(world.handler.handle(delivery, threading.Event())), daemon=True)
    worker.start()
    worker.join(EXAMPLE_TIMEOUT_S)
    assert not worker.is_alive(), f"handler still busy after {EXAMPLE_TIMEOUT_S}s"
    assert outcome, "handler raised"  # a raising thread leaves no outcome (and pytest warns)
    new = world.bus.events[seen:]
    assert new and isinstance(new[-1], RunFailed), new
    error = new[-1].error
    assert error.type != "UnexpectedError", error  # hostile input is always classified
    if error.retryable:
        assert may_be_transient and error.type == "SourceConnectionError", error
    assert outcome[0] is (Outcome.NACK if error.retryable else Outcome.ACK)
    for dialect, statement in world.statements[statements_before:]:
        assert_identifiers_quoted(dialect, statement)


_QUOTED = {"postgresql": r'"(?:[^"]|"")*"', "mysql": r"`(?:[^`]|``)*`", "sqlite": r'"(?:[^"]|"")*"'}
_STRING = r"'(?:[^'\\]|''|\\.)*'"
_READ_ONLY = ("SELECT", "SET", "SHOW", "START", "BEGIN", "ROLLBACK", "COMMIT", "WITH", "DESCRIBE",
              "PRAGMA")  # SQLite reflection (table_xinfo etc.; the source file is opened read-only)


def assert_identifiers_quoted(dialect: str, statement: str) -> None:
    """Outside quoted identifiers and string literals no statement break, comment or DDL is left."""
    bare = re.sub(f"{_QUOTED.get(dialect, _QUOTED['postgresql'])}|{_STRING}", "", statement)
    assert not re.search(r";|--|/\*|\*/|\bDROP\b|\bSHUTDOWN\b|\bSLEEP\b|pg_sleep", bare, re.I), statement
    assert bare.lstrip().split(None, 1)[0].upper() in _READ_ONLY, statement


# --- strategies ------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
wrong_values = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(json_scalars, max_size=3) \
    | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
huge_strings = st.integers(min_value=1_000, max_value=1_200_000).map(lambda n: "A" * n)
huge_arrays = st.integers(min_value=10_001, max_value=30_000).map(lambda n: [f"c{i}" for i in range(n)])
identifiers = (st.sampled_from(PAYLOADS)
               | st.builds(str.__add__, st.sampled_from(PAYLOADS), st.text(max_size=8))
               | st.text(min_size=1, max_size=40))
FIELDS = ("schema_version", "data_source_id", "etl_run_id", "source_type", "connection_params",
          "schema_name", "source_table_name", "dest_table_name", "load_type", "timestamp_column",
          "selected_columns", "last_sync_value", "historical_start_date")
# The host is never set to arbitrary text (that would resolve names off this machine), nor the
# port to an arbitrary number (a server of another kind could keep the client waiting).
PARAM_FIELDS = ("database", "username", "password", "password_env", "password_file", "password_secret")


@st.composite
def mutated(draw: st.DrawFn, world: World) -> dict[str, Any]:
    body = world.base(draw(st.sampled_from(("postgresql", "mysql"))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        params = draw(st.booleans()) and isinstance(body.get("connection_params"), dict)
        target = body["connection_params"] if params else body
        key = draw(st.sampled_from(PARAM_FIELDS if params else FIELDS) | st.text(max_size=10))
        value = draw(st.one_of(wrong_values, huge_strings, huge_arrays, identifiers))
        match draw(st.sampled_from(("delete", "set", "type"))):
            case "delete":
                target.pop(key, None)
            case "set":
                target[key] = value
            case _:
                if params:
                    target[draw(st.sampled_from(("host", "port")))] = draw(
                        st.none() | st.booleans() | st.floats() | st.lists(st.integers(), max_size=2)
                        | huge_strings)
                else:
                    target[key] = draw(wrong_values)
    return body


# Built once: a filter makes a new strategy, which hypothesis validates on its first draw (for this
# one-of of texts, 3 ms of every example when the filter was applied in each example's draw).
not_canaries = identifiers.filter(lambda n: n not in CANARIES and n not in CANARY_COLUMNS)


@st.composite
def hostile_names(draw: st.DrawFn, world: World) -> dict[str, Any]:
    dialect = draw(st.sampled_from(("postgresql", "mysql")))
    name = draw(not_canaries)
    match draw(st.sampled_from(("schema", "table", "column", "cursor"))):
        case "schema":
            return world.base(dialect, table="x", schema_name=name)
        case "table":
            return world.base(dialect, table=name)
        case "column":
            return world.base(dialect, table="x", selected_columns=["id", name])
        case _:
            return world.base(dialect, table="x", load_type="transactional", timestamp_column=name)


@st.composite
def connection_targets(draw: st.DrawFn, world: World) -> dict[str, Any]:
    dialect = draw(st.sampled_from(("postgresql", "mysql")))
    body = world.base(dialect, table=draw(st.sampled_from(("no_such_table", "x; DROP TABLE x"))))
    body["source_type"] = draw(st.sampled_from((*OK_TYPES, dialect, dialect, "oracle", "mssql", "",
                                                "PostgreSQL", "postgresql ", "mysql+pymysql")))
    own_port = body["connection_params"]["port"]
    params = body["connection_params"]
    params["host"] = draw(st.sampled_from(("127.0.0.1", "localhost")))
    params["port"] = draw(st.sampled_from((*world.closed_ports, own_port, own_port, 0, -1, 65536,
                                           "5432", 5432.5, None)))
    params["database"] = draw(st.sampled_from((params["database"], "no_such_database",
                                               "/etc/passwd", "/proc/self/environ", "../../etc/shadow")))
    params["username"] = draw(st.sampled_from((params["username"], "no_such_user", "root'--", None)))
    if body["source_type"] == "mysql" and params["port"] == world.pg["connection"]["port"]:
        # a MySQL client waits for a greeting that PostgreSQL never sends (until connect_timeout)
        params["port"] = world.closed_ports[0]
    if draw(st.booleans()):
        params["password"] = draw(st.text(max_size=30))
    return body


def not_a_request() -> st.SearchStrategy[bytes]:
    return (st.binary(max_size=512)
            | st.text(max_size=200).map(str.encode)
            | json_values.map(lambda v: json.dumps(v).encode())
            | st.sampled_from((b"", b"null", b"[]", b"{}", b"{", b'"x"', b"1e999", b"\xff\xfe\x00",
                               b'{"data_source_id": 1}' * 3, b"[" * 5000 + b"]" * 5000)))


FUZZ: dict[str, Any] = {
    "deadline": None, "derandomize": True, "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                              HealthCheck.data_too_large, HealthCheck.large_base_example,
                              HealthCheck.filter_too_much],
}


@settings(max_examples=200, **FUZZ)
@given(data=not_a_request())
def test_bytes_that_are_not_a_request(world: World, data: bytes) -> None:
    assert_rejected(world, data, may_be_transient=False)


@settings(max_examples=150, **FUZZ)
@given(value=json_values | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values,
                                           max_size=12))
def test_json_of_the_wrong_shape(world: World, value: Any) -> None:
    assert_rejected(world, json.dumps(value).encode(), may_be_transient=False)


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=250, **FUZZ)
@given(data=st.data())
def test_requests_with_missing_extra_wrong_or_huge_fields(world: World, data: st.DataObject) -> None:
    # `"port": true` is port 1 to pydantic (nothing listens there: refused, transient)
    assert_rejected(world, data.draw(mutated(world)), may_be_transient=True)


@settings(max_examples=300, **FUZZ)
@given(data=st.data())
def test_identifiers_crafted_for_sql_injection(world: World, data: st.DataObject) -> None:
    assert_rejected(world, data.draw(hostile_names(world)), may_be_transient=False)


@settings(max_examples=150, **FUZZ)
@given(data=st.data())
def test_unknown_source_types_bad_ports_and_unreachable_hosts(world: World, data: st.DataObject) -> None:
    assert_rejected(world, data.draw(connection_targets(world)), may_be_transient=True)


# --- a few through the real Pub/Sub serve loop -----------------------------------------------------
def test_hostile_messages_through_pubsub_end_as_run_failed(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, pg_admin: sa.Engine,
    pg_schema: str, mysql_admin: sa.Engine, mysql_db: str,
) -> None:
    create_canaries(pg_admin, pg_schema, '"')
    create_canaries(mysql_admin, mysql_db, "`")
    stack = Stack(make_settings(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                                ETL_MAX_RETRIES=1))
    pg = {"host": "127.0.0.1", "port": pg_admin.url.port, "database": pg_admin.url.database,
          "username": pg_admin.url.username}
    my = {"host": "127.0.0.1", "port": mysql_admin.url.port, "database": mysql_db,
          "username": mysql_admin.url.username}

    def request(n: int, params: dict[str, Any], dialect: str, schema: str, **more: Any) -> dict[str, Any]:
        return {"data_source_id": 1, "etl_run_id": n, "source_type": dialect, "connection_params": params,
                "schema_name": schema, "source_table_name": "x", "dest_table_name": "fuzzed",
                "load_type": "catalog", **more}

    permanent: dict[int, dict[str, Any] | bytes] = {
        1: b"\xff\xfe not json", 2: b"null", 3: b"[]",
        4: {"etl_run_id": 4, "data_source_id": 1, "source_type": "oracle"},
        5: request(5, pg, "postgresql", pg_schema, dest_table_name="A" * 1_200_000),
        6: request(6, pg, "postgresql", pg_schema, source_table_name="users; DROP TABLE x"),
        7: request(7, my, "mysql", mysql_db, source_table_name="x`; DROP TABLE users; --"),
        8: request(8, my, "mysql", "x'; DROP DATABASE test; --"),
        9: request(9, pg, "postgresql", pg_schema, selected_columns=["id", 'nope"; DROP TABLE x; --']),
        10: request(10, pg, "postgresql", pg_schema, selected_columns=[f"c{i}" for i in range(10_001)]),
    }
    transient = request(11, {**pg, "port": closed_port()}, "postgresql", pg_schema)
    with serving(stack.settings):
        run_ids = {}
        for n, body in permanent.items():
            message_id = stack.publish(body)
            run_ids[n] = f"etl-run-{n}" if isinstance(body, dict) else f"msg-{message_id}"
        stack.publish(transient)
        failures = {n: stack.wait_terminal(run_id)[0] for n, run_id in run_ids.items()}
        stack.wait_for(lambda events: sum(e["run_id"] == "etl-run-11" for e in events) >= 5)
        assert wait_dead_letters(stack, 1)
        assert stack.undelivered_requests() == 0  # the permanent ones were acked
    assert all(f["event_type"] == "run.failed" and not f["error"]["retryable"] for f in failures.values())
    assert failures[9]["error"]["type"] == "SourceSchemaError"
    assert 'nope"; DROP TABLE x; --' in failures[9]["error"]["message"]
    retried = [e for e in stack.events if e["run_id"] == "etl-run-11"]
    assert {(e["error"]["type"], e["error"]["retryable"]) for e in retried} == {
        ("SourceConnectionError", True)}
    expected = dict.fromkeys(CANARIES, CANARY_ROWS)
    assert tables_and_rows(pg_admin, pg_schema) == expected
    assert tables_and_rows(mysql_admin, mysql_db) == expected
