"""Helpers shared by the source tests: requests, reading every batch, spying on cursors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

from worker.columns import arrow_schema
from worker.messages import EtlRunRequest
from worker.sources.base import SourceSnapshot
from worker.window import Window


def make_request(source_type: str, connection: dict[str, Any], table: str, **fields: Any) -> EtlRunRequest:
    """An EtlRunRequest with test defaults; `fields` override (selected_columns, timestamp_column...)."""
    values: dict[str, Any] = {
        "data_source_id": 1,
        "source_type": source_type,
        "connection_params": connection,
        "source_table_name": table,
        "dest_table_name": "dest",
        "load_type": "transactional" if fields.get("timestamp_column") else "catalog",
    }
    values.update(fields)
    return EtlRunRequest.model_validate(values)


def connection_of(engine: sa.Engine, **overrides: Any) -> dict[str, Any]:
    """connection_params for the database an admin engine points at."""
    url = engine.url
    params = {"host": url.host, "port": url.port, "database": url.database, "username": url.username}
    params.update(overrides)
    return params


P = ParamSpec("P")
R = TypeVar("R")

UTC_PERMISSIVE = "SET time_zone = '+00:00', sql_mode = ''"  # zero dates allowed


def mysql_runner(engine: sa.Engine, database: str, session: str = UTC_PERMISSIVE) -> Callable[[str], None]:
    """Runs ;-separated SQL in `database`, after the `session` settings (a UTC session that allows
    zero dates unless told otherwise)."""
    def run(sql: str) -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"USE `{database}`")
            conn.exec_driver_sql(session)
            for statement in filter(str.strip, sql.split(";")):
                conn.exec_driver_sql(statement)

    return run


def mysql_requests(engine: sa.Engine, database: str) -> Callable[..., EtlRunRequest]:
    """Builds requests for a table of `database`; keyword arguments override request fields."""
    def build(table: str, **fields: Any) -> EtlRunRequest:
        return make_request("mysql", connection_of(engine, database=database), table, **fields)

    return build


def read_rows(
    snapshot: SourceSnapshot, window: Window | None = None, batch_rows: int = 1000
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in snapshot.iter_batches(window, batch_rows):
        assert batch.schema == arrow_schema(snapshot.columns)
        rows.extend(batch.to_pylist())
    return rows


@dataclass
class Execution:
    statement: str
    stream_results: bool
    cursor: Any


@contextmanager
def spy_cursors() -> Iterator[list[Execution]]:
    """Every statement any engine executes meanwhile, with its cursor and stream_results option."""
    seen: list[Execution] = []

    def spy(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        streamed = bool(context.execution_options.get("stream_results")) if context else False
        seen.append(Execution(statement, streamed, cursor))

    sa.event.listen(sa.Engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", spy)


def noting_calls(calls: list[str], real: Callable[P, R]) -> Callable[P, R]:
    """`real`, noting "x" in `calls` each time it runs: a test then knows that path ran, and how often."""
    def noted(*args: P.args, **kwargs: P.kwargs) -> R:
        calls.append("x")
        return real(*args, **kwargs)

    return noted
