"""The dialect contract: what one database family does differently (`SqlDialect`), and what a
dialect's fast reader receives (`FastRead`).

Dialect modules (`postgresql`, `mysql`, `sqlite`) subclass `SqlDialect`; the generic Source
(`sqlalchemy_source`) drives them; fast readers (`pg_copy`, `mysql_raw`) receive a `FastRead` and
never import a dialect (docs/sources.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeEngine

from worker import classify
from worker.columns import Column
from worker.errors import ConfigurationError, EtlError
from worker.messages import ConnectionParams, EtlRunRequest, TableSpec
from worker.sources.arrays import NulledValues
from worker.sources.converters import loads_exact
from worker.sources.typemap import Loss, Target, TypeExample, TypeTable
from worker.window import CursorValue

CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Clock:
    """The database's clock, read inside the snapshot."""

    zoned: datetime  # aware, UTC
    local: datetime  # naive wall clock in the session's default time zone


@dataclass(frozen=True)
class Field:
    """A selected column: what it becomes, how to convert it, and what the SELECT reads."""

    column: Column
    target: Target
    expr: sa.ColumnElement[Any]  # what the generic SELECT reads (labelled with the column name)


@dataclass(frozen=True)
class FastRead:
    """Everything a dialect's reader needs to produce the generic path's batches another way."""

    conn: sa.Connection  # the snapshot's connection: same transaction, same snapshot
    table: sa.Table
    fields: tuple[Field, ...]
    where: tuple[sa.ColumnElement[bool], ...]
    schema: pa.Schema
    batch_rows: int
    nulled: NulledValues
    readers: Readers | None = None  # more connections may read it in parallel (PostgreSQL)


@dataclass(frozen=True)
class Readers:
    """Parallel readers of one table: how many, and how to open another connection to the same
    database (the session's engine: same settings, same type casters)."""

    count: int
    connect: Callable[[], AbstractContextManager[sa.Connection]]


class SqlDialect(ABC):
    """What one database family does differently. Subclasses live in the dialect modules."""

    name: ClassVar[str]
    types: ClassVar[TypeTable] = {}
    examples: ClassVar[tuple[TypeExample, ...]] = ()  # documented rows (docs/types.md)
    losses: ClassVar[tuple[Loss, ...]] = ()  # documented values that do not survive (docs/types.md)
    error_markers: ClassVar[classify.DriverMarkers] = classify.NO_MARKERS  # its driver's error texts

    @abstractmethod
    def url(self, params: ConnectionParams) -> sa.URL:
        """The connection URL (built with sa.URL.create; its repr hides the password)."""

    def engine_options(self) -> dict[str, Any]:
        """Extra create_engine() keyword arguments (connect_args, isolation_level)."""
        return {}

    def on_connect(self, dbapi_conn: Any) -> None:
        """Per DB-API connection setup, before SQLAlchemy uses it (typecasters, transaction mode)."""
        return None

    @abstractmethod
    def open_snapshot(self, conn: sa.Connection) -> Clock:
        """Start the consistent read-only transaction on a fresh connection; read the clock in it."""

    # Whether parallel readers may read a chunked catalog run's key ranges (worker/catalog_chunk_run.py),
    # each on its own connection: in the session's snapshot where `export_snapshot` shares it, else
    # each range in a consistent snapshot of its own (MySQL/MariaDB).
    parallel_key_ranges: ClassVar[bool] = False

    def export_snapshot(self, conn: sa.Connection) -> str | None:
        """An id other connections can import to see this session's snapshot; None: it cannot be
        shared (each parallel reader's range opens a snapshot of its own, `open_snapshot`)."""
        return None

    def import_snapshot(self, conn: sa.Connection, snapshot: str) -> None:
        """A fresh connection's transaction sees the exported `snapshot` (its first statements)."""
        raise ConfigurationError(f"{self.name} cannot share a snapshot between connections")

    def refine_types(self, conn: sa.Connection, table: sa.Table) -> dict[str, TypeEngine[Any]]:
        """Column types that reflection gets wrong, by column name (MariaDB JSON is LONGTEXT)."""
        return {}

    def cursor_param(self, value: CursorValue) -> object:
        """A window bound as the driver should receive it."""
        return value

    def cursor_expr(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """The cursor column as the window compares it (SQLite: a normalised text)."""
        return column

    def fast_batches(self, read: FastRead) -> Iterator[pa.RecordBatch] | None:
        """The generic path's exact batches read a faster way (PostgreSQL COPY), or None."""
        return None

    def reflected_column(self, info: dict[str, Any]) -> None:
        """Correct what reflection reports of a column, in place (SQLAlchemy's `column_reflect`)."""
        return None

    def change_log_session(self, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                           log_from: str | None) -> AbstractContextManager[Any]:
        """A cdc request's session (a SqlAlchemySession whose table reads the change log), from
        `log_from`, the ledger's last position; PostgreSQL and MySQL/MariaDB have one."""
        raise ConfigurationError(f"load_type cdc reads PostgreSQL's or MySQL's change log; not {self.name}'s")

    def classify_error(self, exc: BaseException) -> EtlError | None:
        """How this dialect reads its driver's error, its texts told by `error_markers`; None: not a
        SQLAlchemy error (`classify()` decides alone)."""
        return classify.driver_error(exc, self.error_markers)

    def create_engine(self, params: ConnectionParams) -> sa.Engine:
        # NullPool: the snapshot's one connection is really closed on exit, never pooled.
        engine = sa.create_engine(
            self.url(params), poolclass=NullPool, json_deserializer=loads_exact, **self.engine_options()
        )
        sa.event.listen(engine, "connect", lambda dbapi_conn, _record: self.on_connect(dbapi_conn))
        return engine


@contextmanager
def driver_errors(dialect: SqlDialect) -> Iterator[None]:
    """Where the source calls its driver: an error leaving it carries the dialect's reading of it
    (`classify.remember`), which `classify()` returns; the exception itself goes on unchanged."""
    try:
        yield
    except Exception as exc:
        reading = dialect.classify_error(exc)
        if reading is not None:
            classify.remember(exc, reading)
        raise


def server_url(driver: str, params: ConnectionParams, **query: str) -> sa.URL:
    """host/port/database/user/password as a URL for a database server (repr hides the password)."""
    return sa.URL.create(
        driver, username=params.username, password=password_of(params), host=params.host,
        port=params.port, database=params.database, query=query,
    )


def password_of(params: ConnectionParams) -> str | None:
    return params.password.get_secret_value() if params.password is not None else None
