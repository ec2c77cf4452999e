"""The generic Source on SQLAlchemy 2 Core: one read-only snapshot (a session), in which the
tables of a job are reflected and read.

Dialect modules supply what differs (`worker.sources.dialect.SqlDialect`): the URL, how to open a
consistent read-only snapshot and read the database's clock in it, per-connection driver setup,
type-table entries, a fast reader, and what their driver's error texts mean. Everything else is
here: reflection, the column mapping, window planning, COUNT(*) and streaming. Every call into the
driver runs inside `driver_errors`, so an error leaving the source carries its dialect's reading.

Queries are built with SQLAlchemy constructs only; identifiers are never pasted into SQL text.
The session owns one connection, shared by its tables. On MySQL a connection can have only one open
streaming result, so the runner reflects, plans and counts every table before it streams any, and
streams the tables one after the other (the session refuses other queries while a stream is open,
on every dialect, to keep that contract portable).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.types import NullType, TypeEngine

from worker.columns import Column, arrow_schema
from worker.errors import ColumnNameError, ConfigurationError, SourceSchemaError, UnsupportedTypeError
from worker.messages import EtlRunRequest, TableSpec
from worker.modes import mode_of
from worker.names import column_names
from worker.secrets import SecretResolver
from worker.sources.arrays import NulledValues
from worker.sources.base import KeyRange, RangeRead
from worker.sources.dialect import Clock, FastRead, Field, Readers, SqlDialect, driver_errors
from worker.sources.fastpath import fast_column_array, gc_paused
from worker.sources.key_bounds import KEY_BOUND_TYPES, typed_bound
from worker.sources.read_ahead import merged
from worker.sources.typemap import Target, TypeTable, lookup
from worker.window import CursorValue, Window, boundary

log = logging.getLogger(__name__)

CursorKind = Literal["naive", "zoned", "date", "integer"]
_CURSOR_KINDS: dict[str, CursorKind] = {
    "DATETIME": "naive",
    "TIMESTAMP": "zoned",
    "DATE": "date",
    "INT64": "integer",
}
# An integer window's high when no row has a cursor value: below every BIGINT, so the next run's
# window (low = this high) still reads every row that appears later.
INTEGER_FLOOR = -(2**63)
_Bound = TypeVar("_Bound", datetime, date, int)
_PlannedBounds = tuple[CursorValue | None, CursorValue]


class SqlAlchemySource:
    """A `Source` for one dialect."""

    def __init__(self, dialect: SqlDialect, secrets: SecretResolver | None = None, readers: int = 1) -> None:
        """`readers`: connections that may read one table in parallel, in the session's snapshot,
        where the dialect can share it (PostgreSQL; elsewhere one connection reads)."""
        self.dialect = dialect
        self.name = dialect.name
        self._secrets = secrets or SecretResolver()
        self._readers = readers

    @contextmanager
    def session(self, request: EtlRunRequest, log_from: str | None = None) -> Iterator[SqlAlchemySession]:
        """Connect and open the snapshot; close everything on exit. A cdc request's session is
        PostgreSQL's (worker/sources/pg_cdc.py), from `log_from`, the ledger's last position."""
        started = time.monotonic()
        with driver_errors(self.dialect):
            # A password reference (env, file, Secret Manager) becomes the password only here.
            engine = self.dialect.create_engine(self._secrets.resolved(request.connection_params))
        try:
            with ExitStack() as closing:  # the connection stays open while the caller reads
                with driver_errors(self.dialect):
                    conn = closing.enter_context(engine.connect())
                spec = _cdc_spec(request)
                if spec is not None:
                    yield closing.enter_context(self._cdc_session(conn, request, spec, log_from))
                    return
                with driver_errors(self.dialect):
                    clock = self.dialect.open_snapshot(conn)
                log.info("source snapshot open: %s (%.2fs)", self.name, time.monotonic() - started)
                readers = Readers(self._readers, engine.connect) if self._readers > 1 else None
                yield SqlAlchemySession(conn, self.dialect, clock, request.schema_name,
                                        strict=request.strict_types, readers=readers)
        finally:
            engine.dispose()

    def _cdc_session(self, conn: sa.Connection, request: EtlRunRequest, spec: TableSpec,
                     log_from: str | None) -> AbstractContextManager[SqlAlchemySession]:
        session: AbstractContextManager[SqlAlchemySession] = self.dialect.change_log_session(
            conn, request, spec, log_from)
        return session

    @contextmanager
    def snapshot(self, request: EtlRunRequest) -> Iterator[SqlAlchemyTable]:
        """A one-table request: its session and its table, reflected."""
        spec = _only_table(request)
        with self.session(request) as session:
            yield session.table(spec)


def _cdc_spec(request: EtlRunRequest) -> TableSpec | None:
    """The one table of a cdc request; None for the other modes (a job mixing them is refused)."""
    specs = request.table_specs()
    if not any(mode_of(spec.load_type).reads == "log" for spec in specs):
        return None
    if len(specs) != 1:
        raise ConfigurationError("a cdc table is loaded on its own (its slot exports its own snapshot), "
                                 "not in a job of several tables")
    return specs[0]


def _only_table(request: EtlRunRequest) -> TableSpec:
    specs = request.table_specs()
    if len(specs) != 1:
        raise ValueError(f"snapshot() reads one table; this job has {len(specs)}: use session()")
    return specs[0]


# --- reflection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cursor:
    column: sa.ColumnElement[Any]
    kind: CursorKind


@dataclass(frozen=True)
class _Layout:
    table: sa.Table
    qualified: str
    fields: tuple[Field, ...]
    cursor: _Cursor | None
    key: tuple[str, ...] = ()  # a merge run's key columns (source names): the request's, else the PK
    chunk_key: tuple[str, ...] = ()  # the same key for any mode: what a chunked catalog run splits

    @classmethod
    def reflect(cls, conn: sa.Connection, dialect: SqlDialect, schema: str | None, spec: TableSpec
                ) -> _Layout:
        qualified = _qualified(schema, spec.source_table_name)
        try:
            table = sa.Table(
                spec.source_table_name, sa.MetaData(), schema=schema, autoload_with=conn,
                listeners=[("column_reflect", lambda _insp, _table, info: dialect.reflected_column(info))],
            )
        except sa.exc.NoSuchTableError:
            raise SourceSchemaError(f"source table not found: {qualified}") from None
        mapper = _Mapper(table, qualified, dialect.refine_types(conn, table), dialect.types, conn.dialect)
        # None (and an empty list, which selects nothing useful) mean every column in table order.
        names = spec.selected_columns or [col.name for col in table.columns]
        # Every name problem surfaces here, before the run touches BigQuery (docs/names.md).
        bq_names = column_names(names, _overrides(table, qualified, spec.column_names))
        fields = tuple(mapper.field(name, bq_names[name]) for name in names)
        mode = mode_of(spec.load_type)
        cursor = mapper.cursor(spec.timestamp_column) if mode.windowed and spec.timestamp_column else None
        key = tuple(spec.primary_key or (col.name for col in table.primary_key.columns))
        return cls(table, qualified, fields, cursor, key if mode.keyed else (), key)


def _overrides(table: sa.Table, qualified: str, overrides: dict[str, str] | None) -> dict[str, str]:
    """The request's column_names; one naming a column the table does not have is refused (a typo
    would otherwise silently do nothing)."""
    unknown = [name for name in overrides or {} if name not in table.c]
    if unknown:
        raise ColumnNameError(f"column_names names {unknown[0]!r}, which is not a column of {qualified}")
    return dict(overrides or {})


def _qualified(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


@dataclass(frozen=True)
class _Mapper:
    """Maps reflected columns through the type tables."""

    table: sa.Table
    qualified: str
    refined: dict[str, TypeEngine[Any]]
    types: TypeTable
    sa_dialect: sa.Dialect

    def field(self, name: str, bq_name: str) -> Field:
        """The source column `name`, loaded as the BigQuery column `bq_name`."""
        col, sa_type, source_type, target = self._resolve(name)
        column = Column(bq_name, source_type, target.arrow_type, target.bq_type, target.repeated,
                        source_name=name if bq_name != name else None)
        return Field(column, target, _read_expr(col, sa_type, target).label(bq_name))

    def cursor(self, name: str) -> _Cursor:
        col, _, source_type, target = self._resolve(name)
        kind = None if target.repeated else _CURSOR_KINDS.get(target.bq_type)
        if kind is None:
            raise ConfigurationError(
                f"timestamp_column {name!r} ({source_type}) must be a timestamp, date or integer column"
            )
        return _Cursor(col, kind)

    def _resolve(self, name: str) -> tuple[sa.Column[Any], TypeEngine[Any], str, Target]:
        col = _table_column(self.table, self.qualified, name)
        sa_type = self.refined.get(name, col.type)
        source_type = _compiled(sa_type, self.sa_dialect)
        target = lookup(sa_type, self.types)
        if target is None:
            raise UnsupportedTypeError(
                f"column {name!r} of {self.qualified} has type {source_type!r}, which has no BigQuery mapping"
            )
        return col, sa_type, source_type, target


def _table_column(table: sa.Table, qualified: str, name: str) -> sa.Column[Any]:
    try:
        return table.c[name]
    except KeyError:
        raise SourceSchemaError(f"column {name!r} not found in source table {qualified}") from None


def _compiled(sa_type: TypeEngine[Any], dialect: sa.Dialect) -> str:
    try:
        return str(sa_type.compile(dialect=dialect)).lower()
    except sa.exc.CompileError:  # NullType: reflection did not recognise the type
        return "unrecognised type"


# Read modes in which the database casts the column (element-wise for an array) before sending it.
_READ_CASTS: dict[str, Callable[[], TypeEngine[Any]]] = {"text": sa.Text, "numeric": sa.Numeric}


def _read_expr(col: sa.Column[Any], sa_type: TypeEngine[Any], target: Target) -> sa.ColumnElement[Any]:
    if target.read == "raw":  # NullType has no result processor: the driver's value as is
        return sa.type_coerce(col, NullType())
    cast_to = _READ_CASTS.get(target.read)
    if cast_to is not None:
        return sa.cast(col, sa.ARRAY(cast_to()) if target.repeated else cast_to())
    return col if sa_type is col.type else sa.type_coerce(col, sa_type)


# --- window --------------------------------------------------------------------------------------
def parse_cursor(text: str, kind: CursorKind) -> CursorValue:
    """A cursor value from its text: zoned → aware UTC (naive text is UTC); naive → naive (an offset
    in the text is converted to UTC, then dropped); date; integer."""
    if kind == "integer":
        return _parse(text, kind, int)
    if kind == "date":
        return _parse(text, kind, _parse_date)
    return _parse(text, kind, _parse_zoned if kind == "zoned" else _parse_naive)


def cursor_value(raw: object, kind: CursorKind) -> CursorValue:
    """A cursor value as the driver returned it, in the form the window keeps (`parse_cursor`'s):
    zoned → aware UTC (a naive value is in the session zone, UTC); naive → naive; date; integer.
    Text (SQLite's normalised cursor expression) is parsed."""
    if isinstance(raw, str):
        return parse_cursor(raw, kind)
    if kind == "integer" and isinstance(raw, int):
        return int(raw)
    if kind == "date" and isinstance(raw, date):
        return raw.date() if isinstance(raw, datetime) else raw
    if kind in ("integer", "date") or not isinstance(raw, datetime):
        raise ConfigurationError(f"cursor value {raw!r} is not a timestamp")
    if kind == "zoned":
        return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)
    return raw if raw.tzinfo is None else raw.astimezone(UTC).replace(tzinfo=None)


def _parse(text: str, kind: CursorKind, parse: Callable[[str], _Bound]) -> _Bound:
    try:
        return parse(text.strip())
    except ValueError:
        raise ConfigurationError(f"cannot read {text!r} as a {kind} cursor value") from None


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:  # a datetime text: its date
        return datetime.fromisoformat(text).date()


def _parse_zoned(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_naive(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _bounds(lows: Sequence[_Bound], high: _Bound) -> tuple[_Bound | None, _Bound]:
    """The greatest low; a high at or below it makes the window empty (never negative)."""
    low = max(lows) if lows else None
    return (low, low) if low is not None and high <= low else (low, high)


# --- the session and its tables ------------------------------------------------------------------
class SqlAlchemySession:
    """A `SourceSession`: one connection inside one read-only transaction, shared by its tables."""

    def __init__(self, conn: sa.Connection, dialect: SqlDialect, clock: Clock, schema: str | None,
                 strict: bool = False, readers: Readers | None = None) -> None:
        self.conn = conn
        self.readers = readers
        self.dialect = dialect
        self.clock = clock
        self._schema = schema
        self._strict = strict
        self.streaming = False  # a batch stream of one of its tables is open

    @property
    def snapshot_at(self) -> datetime:
        """The source's clock (UTC) when the snapshot was opened: orders catalog snapshots."""
        return self.clock.zoned

    @property
    def local_clock(self) -> datetime:
        return self.clock.local

    def table(self, spec: TableSpec) -> SqlAlchemyTable:
        self.check_idle()
        with driver_errors(self.dialect):
            layout = _Layout.reflect(self.conn, self.dialect, self._schema, spec)
        log.info("source table reflected: %s, %d columns", layout.qualified, len(layout.fields))
        return SqlAlchemyTable(self, layout, NulledValues(strict=self._strict))

    def check_idle(self) -> None:
        if self.streaming:
            raise RuntimeError("a batch stream is open on this snapshot: finish iter_batches first")


class SqlAlchemyTable:
    """A `SourceTable`: every call runs on its session's connection, in its snapshot."""

    def __init__(self, session: SqlAlchemySession, layout: _Layout, nulled: NulledValues | None = None
                 ) -> None:
        self._session = session
        self._conn = session.conn
        self._dialect = session.dialect
        self._layout = layout
        self._clock = session.clock
        self._columns = tuple(f.column for f in layout.fields)
        self._nulled = nulled or NulledValues()

    @property
    def columns(self) -> tuple[Column, ...]:
        return self._columns

    @property
    def values_nulled(self) -> dict[str, int]:
        """Per column, the values read so far that BigQuery cannot hold, loaded as NULL."""
        return dict(self._nulled.counts)

    @property
    def snapshot_at(self) -> datetime:
        return self._session.snapshot_at

    @property
    def local_clock(self) -> datetime:
        return self._session.local_clock

    def plan_window(self, lows: Sequence[str], lag_s: float, high: str | None = None) -> Window:
        """Window of a transactional run: low = the greatest of `lows`; high = the clock read in
        this snapshot minus `lag_s` (zoned: UTC now; naive: the session zone's wall clock).

        A date cursor's high is the date of (clock - lag): today's rows load tomorrow, no gap and no
        overlap. An integer cursor's high is MAX(cursor) + 1 in this snapshot. Known limit: an id
        below that MAX that commits after the snapshot (a long transaction) is never read.
        """
        cursor = self._require_cursor()
        self._check_idle()
        texts = [text for text in lows if text]
        with driver_errors(self._dialect):
            low, top = self._plan(cursor, texts, timedelta(seconds=lag_s), high)
        window = Window(column=cursor.column.name, low=low, high=top)
        log.info("window planned on %s: [%s, %s)", window.column, window.low_text, window.high_text)
        return window

    def count_rows(self, window: Window | None) -> int:
        self._check_idle()
        query = sa.select(sa.func.count()).select_from(self._layout.table).where(*self._where(window))
        with driver_errors(self._dialect):
            return int(self._conn.execute(query).scalar_one())

    def split_point(self, window: Window, rows: int) -> CursorValue | None:
        """Three index reads: the cursor at position `rows` (ORDER BY cursor OFFSET rows LIMIT 1:
        an index scan that skips `rows` entries, so splitting a window costs one pass over its
        index, not a sort), the window's smallest cursor and, only for a value holding more than
        `rows` rows, the next value above it. Without an index on the cursor each read sorts."""
        self._check_idle()
        cursor = self._require_cursor()
        col = self._dialect.cursor_expr(_table_column(self._layout.table, self._layout.qualified,
                                                      window.column))
        where = self._where(window)

        def scalar(query: sa.Select[Any]) -> CursorValue | None:
            with driver_errors(self._dialect):
                raw = self._conn.execute(query).scalar()
            return None if raw is None else cursor_value(raw, cursor.kind)

        def above(value: CursorValue) -> CursorValue | None:
            bigger = col > self._dialect.cursor_param(value)
            return scalar(sa.select(sa.func.min(col)).select_from(self._layout.table).where(*where, bigger))

        at_offset = scalar(sa.select(col).select_from(self._layout.table).where(*where)
                           .order_by(col).offset(rows).limit(1))
        if at_offset is None:
            return None
        first = scalar(sa.select(sa.func.min(col)).select_from(self._layout.table).where(*where))
        return boundary(at_offset, first, above)

    def iter_batches(self, window: Window | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        read = self._read_of(self._layout.fields, tuple(self._where(window)), batch_rows, self._nulled)
        yield from self._stream(dataclasses.replace(read, readers=self._session.readers), "rows")
        if self._nulled.counts:
            log.warning("values BigQuery cannot hold, loaded as NULL, per column of %s: %s",
                        self._layout.qualified, self._nulled.counts)

    def read_plan(self, window: Window | None, batch_rows: int) -> FastRead:
        """What iter_batches reads (fields, window, batch size, this table's NULL tally), for a
        reader on another connection: a chunk's key range (`mysql_ranges.range_batches`)."""
        return self._read_of(self._layout.fields, tuple(self._where(window)), batch_rows, self._nulled)

    def column(self, source_name: str) -> Column:
        return self._field(source_name).column

    # --- key-range chunks (worker/catalog_chunks.py, read by worker/catalog_chunk_run.py) ---------
    @property
    def chunk_key(self) -> tuple[str, ...]:
        """The source names of the key a chunked catalog run splits by (empty: not chunked: no key,
        a key column not loaded, or of a type a stored bound cannot come back to: key_bounds)."""
        key = self._layout.chunk_key
        loaded = {f.column.source_name or f.column.name: f.column for f in self._layout.fields}
        if all(name in loaded and loaded[name].bq_type in KEY_BOUND_TYPES for name in key):
            return key
        return ()

    def key_split_points(self, rows: int) -> list[tuple[Any, ...]]:
        """The key at positions rows + 1, 2 * rows + 1, ... of the key order, in this snapshot: the
        inner bounds of chunks of `rows` rows. One pass over the key's index (ROW_NUMBER over the
        key order), not one OFFSET query per chunk."""
        if rows < 1:
            raise ValueError("rows must be at least 1")
        self._check_idle()
        cols = self._key_exprs()
        number = sa.func.row_number().over(order_by=cols).label("n")
        ranked = sa.select(*cols, number).select_from(self._layout.table).subquery()
        picked = [ranked.c[col.name] for col in cols]
        query = (sa.select(*picked).where(ranked.c.n > 1, (ranked.c.n - 1) % rows == 0)
                 .order_by(*picked))
        with driver_errors(self._dialect):
            return [tuple(row) for row in self._conn.execute(query)]

    def key_bound(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """A stored (JSON) key value in its key columns' types, ready to bind (key_bounds)."""
        return typed_bound(values, [self.column(name).bq_type for name in self.chunk_key])

    def iter_key_range(self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None,
                       batch_rows: int, nulled: NulledValues | None = None) -> Iterator[pa.RecordBatch]:
        """The rows whose key k has low <= k < high (None: unbounded), compared as a tuple so a
        composite or text key splits like an integer one, through the same fast readers; values
        BigQuery cannot hold are counted in `nulled` (default: the table's own counts)."""
        tally = self._nulled if nulled is None else nulled
        read = self._read_of(self._layout.fields, self._key_where(low, high), batch_rows, tally)
        yield from self._stream(read, "rows")

    def count_key_range(self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None) -> int:
        """COUNT(*) of what iter_key_range(low, high) yields, in this snapshot (an index range count)."""
        self._check_idle()
        query = sa.select(sa.func.count()).select_from(self._layout.table).where(*self._key_where(low, high))
        with driver_errors(self._dialect):
            return int(self._conn.execute(query).scalar_one())

    def read_key_ranges(self, ranges: Sequence[KeyRange], batch_rows: int) -> Iterator[RangeRead]:
        """Each range counted, then read. With one reader, one after the other in the session's
        snapshot; with ETL_READERS_PER_RUN > 1 where the dialect allows it, by that many connections
        (reader i reads ranges i, i + n, ...): PostgreSQL's all in the session's exported snapshot,
        MySQL/MariaDB's each range in a consistent snapshot of its own (docs/modes.md)."""
        readers = self._session.readers
        count = min(readers.count, len(ranges)) if readers is not None else 1
        if readers is None or count < 2 or not self._dialect.parallel_key_ranges:
            for index, (low, high) in enumerate(ranges):
                counted = self.count_key_range(low, high)
                tally = NulledValues(strict=self._nulled.strict)
                for batch in self.iter_key_range(low, high, batch_rows, tally):
                    yield RangeRead(index, batch, counted, self.snapshot_at)
                _add_counts(self._nulled, tally)
                yield RangeRead(index, None, counted, self.snapshot_at, dict(tally.counts))
            return
        self._check_idle()
        with driver_errors(self._dialect):
            shared = self._dialect.export_snapshot(self._conn)
        log.info("reading %d key ranges of %s with %d readers%s", len(ranges), self._layout.qualified, count,
                 f" in snapshot {shared}" if shared else ", each range in a snapshot of its own")
        tallies = [NulledValues(strict=self._nulled.strict) for _ in range(count)]
        streams = [functools.partial(self._range_reader, readers, shared, batch_rows, tallies[k],
                                     [(i, ranges[i]) for i in range(k, len(ranges), count)])
                   for k in range(count)]
        self._session.streaming = True  # the session's connection stays idle meanwhile
        try:
            yield from merged(streams, name="chunk-reader")
        finally:
            self._session.streaming = False
            for tally in tallies:
                _add_counts(self._nulled, tally)

    def _range_reader(self, readers: Readers, shared: str | None, batch_rows: int, tally: NulledValues,
                      ranges: Sequence[tuple[int, KeyRange]]) -> Iterator[RangeRead]:
        """One parallel reader: its ranges on its own connection, in the shared snapshot or each in
        a snapshot of its own."""
        with driver_errors(self._dialect), readers.connect() as conn:
            read_at = self.snapshot_at
            if shared is not None:
                self._dialect.import_snapshot(conn, shared)
            for index, (low, high) in ranges:
                if shared is None:
                    read_at = self._dialect.open_snapshot(conn).zoned
                where = self._key_where(low, high)
                counted = int(conn.execute(sa.select(sa.func.count()).select_from(self._layout.table)
                                           .where(*where)).scalar_one())
                own = NulledValues(strict=tally.strict)
                read = self._read_of(self._layout.fields, where, batch_rows, own)
                for batch in self.read_batches(dataclasses.replace(read, conn=conn)):
                    yield RangeRead(index, batch, counted, read_at)
                _add_counts(tally, own)
                yield RangeRead(index, None, counted, read_at, dict(own.counts))
                if shared is None:
                    conn.rollback()  # read only; the next range opens its own snapshot

    def _key_where(self, low: tuple[Any, ...] | None, high: tuple[Any, ...] | None
                   ) -> tuple[sa.ColumnElement[bool], ...]:
        cols = self._key_exprs()
        key = sa.tuple_(*cols)

        def bound(values: tuple[Any, ...]) -> sa.ColumnElement[Any]:  # bound as its column's type
            return sa.tuple_(*(sa.literal(v, type_=col.type) for v, col in zip(values, cols, strict=True)))

        where: list[sa.ColumnElement[bool]] = []
        if low is not None:
            where.append(key >= bound(low))
        if high is not None:
            where.append(key < bound(high))
        return tuple(where)

    def _key_exprs(self) -> list[sa.ColumnElement[Any]]:
        if not self._layout.chunk_key:
            raise ConfigurationError(f"{self._layout.qualified} has no primary key to split by")
        return [_table_column(self._layout.table, self._layout.qualified, name)
                for name in self._layout.chunk_key]

    @property
    def key_columns(self) -> tuple[Column, ...]:
        if not self._layout.key:
            raise ConfigurationError(
                f"{self._layout.qualified} has no primary key: give the request's primary_key")
        return tuple(self.column(name) for name in self._layout.key)

    def iter_keys(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Every row's key, read like the rows themselves (same snapshot, same conversions, the
        same fast readers); its own NULL counts, so values_nulled stays about the rows."""
        fields = tuple(self._field(name) for name in self._layout.key)
        if not fields:
            raise ConfigurationError(f"{self._layout.qualified} has no primary key to read")
        read = self._read_of(fields, (), batch_rows, NulledValues(strict=self._nulled.strict))
        yield from self._stream(read, "keys")

    def _read_of(self, fields: tuple[Field, ...], where: tuple[sa.ColumnElement[bool], ...],
                 batch_rows: int, nulled: NulledValues) -> FastRead:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        schema = arrow_schema(tuple(f.column for f in fields))
        return FastRead(self._conn, self._layout.table, fields, where, schema, batch_rows, nulled)

    def _stream(self, read: FastRead, what: str) -> Iterator[pa.RecordBatch]:
        """The dialect's fast reader when it carries every field exactly, else the generic one."""
        self._check_idle()
        self._session.streaming = True
        rows = batches = 0
        try:
            with driver_errors(self._dialect):
                fast = self._dialect.fast_batches(read)
                for batch in fast if fast is not None else self._generic(read):
                    rows, batches = rows + batch.num_rows, batches + 1
                    yield batch
        finally:
            self._session.streaming = False
            log.info("read %d %s in %d batches from %s", rows, what, batches, self._layout.qualified)

    # --- for readers of other tables of the same shape (CDC's changes: worker/sources/pg_cdc.py) --
    @property
    def sa_table(self) -> sa.Table:
        return self._layout.table

    @property
    def nulled(self) -> NulledValues:
        return self._nulled

    def retargeted(self, table: sa.Table) -> Iterator[Field]:
        """The loaded fields, reading the same-named columns of `table` instead (same conversions)."""
        source = self._layout.table

        def replace(element: Any) -> Any:
            if isinstance(element, sa.Column) and element.table is source:
                return table.c[element.name]
            return None

        for field in self._layout.fields:
            expr: sa.ColumnElement[Any] = sa.sql.visitors.replacement_traverse(  # type: ignore[call-overload]
                field.expr, {}, replace)
            yield Field(field.column, field.target, expr)

    def read_batches(self, read: FastRead) -> Iterator[pa.RecordBatch]:
        """`read` (on its own connection and table) by the dialect's fast reader or the generic one."""
        with driver_errors(self._dialect):
            fast = self._dialect.fast_batches(read)
            yield from fast if fast is not None else self._generic(read)

    def _generic(self, read: FastRead) -> Iterator[pa.RecordBatch]:
        query = (
            sa.select(*(f.expr for f in read.fields))
            .select_from(read.table)
            .where(*read.where)
            .execution_options(stream_results=True, yield_per=read.batch_rows)  # server-side cursor
        )
        with gc_paused(), read.conn.execute(query) as result:
            for partition in result.partitions():
                yield self._to_batch(partition, read)

    # --- helpers ---------------------------------------------------------------------------------
    def _plan(self, cursor: _Cursor, texts: list[str], lag: timedelta, high: str | None) -> _PlannedBounds:
        """`high`: a resumed run's fixed high (text), parsed like the lows instead of the clock."""
        kind = cursor.kind
        if kind == "integer":
            top = _parse(high, kind, int) if high is not None else self._integer_high(cursor)
            return _bounds([_parse(t, kind, int) for t in texts], top)
        if kind == "date":
            day = _parse(high, kind, _parse_date) if high is not None else (self._clock.local - lag).date()
            return _bounds([_parse(t, kind, _parse_date) for t in texts], day)
        if kind == "zoned":
            moment = _parse(high, kind, _parse_zoned) if high is not None else self._clock.zoned - lag
            return _bounds([_parse(t, kind, _parse_zoned) for t in texts], moment)
        local = _parse(high, kind, _parse_naive) if high is not None else self._clock.local - lag
        return _bounds([_parse(t, kind, _parse_naive) for t in texts], local)

    def _integer_high(self, cursor: _Cursor) -> int:
        top = self._conn.execute(sa.select(sa.func.max(cursor.column))).scalar_one()
        return INTEGER_FLOOR if top is None else int(top) + 1

    def _where(self, window: Window | None) -> list[sa.ColumnElement[bool]]:
        # Half-open [low, high); a NULL cursor satisfies neither comparison, so it is never read.
        if window is None:
            return []
        col = self._dialect.cursor_expr(
            _table_column(self._layout.table, self._layout.qualified, window.column))
        conditions = [col < self._dialect.cursor_param(window.high)]
        if window.low is not None:
            conditions.append(col >= self._dialect.cursor_param(window.low))
        return conditions

    def _field(self, source_name: str) -> Field:
        for field in self._layout.fields:
            if (field.column.source_name or field.column.name) == source_name:
                return field
        raise SourceSchemaError(f"column {source_name!r} of {self._layout.qualified} is not loaded "
                                "(add it to selected_columns)")

    def _to_batch(self, rows: Sequence[sa.Row[Any]], read: FastRead) -> pa.RecordBatch:
        by_column = zip(*rows, strict=True)  # transpose: convert and build each column at once
        arrays = [
            fast_column_array(values, f.column, f.target.convert, read.nulled)
            for values, f in zip(by_column, read.fields, strict=True)
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=read.schema)

    def _require_cursor(self) -> _Cursor:
        if self._layout.cursor is None:
            raise ConfigurationError("plan_window needs a transactional request with timestamp_column")
        return self._layout.cursor

    def _check_idle(self) -> None:
        self._session.check_idle()


def _add_counts(into: NulledValues, counts: NulledValues) -> None:
    for column, nulled in counts.counts.items():
        into.counts[column] = into.counts.get(column, 0) + nulled
