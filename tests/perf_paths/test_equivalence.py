"""Every fast path yields exactly the generic path's batches and NULL counts (docs/performance.md).

The generic path here is the batch builder as the types work wrote it: SQLAlchemy rows, one
converter call per value (`arrays.column_array`), no COPY. The fast paths are what runs by default:
PostgreSQL COPY (`pg_copy`), MySQL's raw text protocol values (`mysql_raw`) and the generic path's
own speed-ups (`fastpath`).
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tests.sources import (
    UTC_PERMISSIVE,
    connection_of,
    make_request,
    mysql_requests,
    mysql_runner,
    noting_calls,
)
from tests.sources.test_mysql import ALL_TYPES as MYSQL_ALL_TYPES
from tests.sources.test_postgresql import ALL_TYPES_DDL as PG_ALL_TYPES
from tests.types.golden import _FastPathSpy, line_forms
from worker.messages import EtlRunRequest
from worker.sources import fastpath, get_source, mysql_raw, pg_copy, sqlalchemy_source
from worker.sources.arrays import column_array
from worker.sources.mysql import MySQLDialect
from worker.sources.postgresql import PostgresDialect

# Every PostgreSQL type COPY carries, with the values where it could go wrong: NULL against '',
# separators, quotes and newlines in text, NaN, ±infinity, BC and year 10000, jsonb whose strings
# hold ", " or whose numbers the generic converter spells differently or refuses.
PG_COPY_TYPES = r"""
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE copyable (
  id int, i2 smallint, i8 bigint, n numeric(12, 3), nb numeric(40, 20), nu numeric, r real,
  d double precision, b boolean, t text, vc varchar(10), ch char(3), u uuid, ip inet, iv interval,
  mo mood, m money, dt date, ts timestamp(6), tz timestamptz(6), js json, jb jsonb, by bytea
);
INSERT INTO copyable VALUES
 (1, -32768, -9223372036854775808, 123456789.123, '12345678901234567890.12345678901234567890',
  '0.0000001', 1.5, 1.0000000000000002, true, 'a,b "q" ' || chr(10) || 'c', '', 'ab',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1', '1 year 2 mons', 'happy', 12.5,
  '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456+02',
  '{"b": [1, 2.50], "a": "é, x: y"}', '{"f": 1.10000000000000000001, "big": 12345678901234567890123}',
  '\x00ff'),
 (2, NULL, NULL, 'NaN', 'NaN', 'NaN', 'NaN', '-Infinity', false, '\N', NULL, NULL, NULL, NULL,
  NULL, NULL, -1234.5, 'infinity', '-infinity', 'infinity', 'null', 'null', ''),
 (3, 0, 0, 0, 0, '-0.000', '-0', '-0', NULL, 'NaN', 'x', NULL, NULL, '10.0.0.0/8', '-3 days',
  'sad', NULL, '0044-03-15 BC', '10000-01-01', '0044-03-15 12:00+00 BC', '{"a" :1 , "a": 2}',
  '{"s": "x, y", "k: v": [0.0000001, 1e2, "\"q\", z"]}', NULL),
 (4, 7, 7, 0.001, 1e-20, '1e10', 3.4e38, 1.7976931348623157e308, true, 'tab	"', 'éé', 'é',
  '00000000-0000-0000-0000-000000000000', '::1', '00:00:00.000001', 'happy', 0,
  '0001-01-01', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00',
  '[]', '{"n": [1.5, -2, 0.25, true, false, null, {}], "e": ""}', '\x'),
 (41, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, E'back\\slash \\N \\t' || chr(8) || chr(11) || chr(12)
  || chr(13) || chr(1), E'\\N', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  E'{"a": "\\\\ \\"q\\"\\n"}', E'{"a": "\\\\ \\"q\\"\\n\\u0001", "b": "\\t"}', E'\\x5c0a09'),
 (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO copyable (id, jb, t)
  SELECT g, jsonb_build_object('k', g, 'p', g / 4.0, 's', 'v' || g), repeat('x', g % 50)
  FROM generate_series(6, 2600) g;
"""


@contextmanager
def generic_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The generic path as the types work wrote it: no COPY, no raw reads, no fast converters."""
    with monkeypatch.context() as patch:
        patch.setattr(PostgresDialect, "fast_batches", lambda _self, _read: None)
        patch.setattr(MySQLDialect, "fast_batches", lambda _self, _read: None)
        patch.setattr(sqlalchemy_source, "fast_column_array", column_array)
        yield


def read_all(request: EtlRunRequest, batch_rows: int) -> tuple[list[pa.RecordBatch], dict[str, int]]:
    with get_source(request.source_type).snapshot(request) as snap:
        counted = snap.count_rows(None)  # the runner's order: count, then stream
        batches = list(snap.iter_batches(None, batch_rows))
        assert counted == sum(batch.num_rows for batch in batches)  # in the same snapshot
        return batches, snap.values_nulled


def fast_reads(monkeypatch: pytest.MonkeyPatch, reader: Any) -> list[bool]:
    """Per read on the default path, whether the fast `reader` (pg_copy, mysql_raw) took the table
    (True) or left it to the generic path (False). The generic path of `assert_same` is not asked."""
    spy = _FastPathSpy(reader.fast_batches)
    monkeypatch.setattr(reader, "fast_batches", spy)
    return spy.used


def fast_columns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each column the generic path built with its own speed-ups (`fast_column_array`), per batch."""
    built: list[str] = []
    real = fastpath.fast_column_array  # what sqlalchemy_source calls, before any patch

    def spy(values: Any, column: Any, convert: Any, nulled: Any) -> pa.Array:
        built.append(column.name)
        return real(values, column, convert, nulled)

    monkeypatch.setattr(sqlalchemy_source, "fast_column_array", spy)
    return built


def assert_same(request: EtlRunRequest, monkeypatch: pytest.MonkeyPatch, batch_rows: int = 1000) -> None:
    fast, fast_nulled = read_all(request, batch_rows)
    with generic_path(monkeypatch):
        generic, generic_nulled = read_all(request, batch_rows)
    assert [b.num_rows for b in fast] == [b.num_rows for b in generic]
    for fast_batch, generic_batch in zip(fast, generic, strict=True):
        assert fast_batch.schema == generic_batch.schema
        for name in generic_batch.schema.names:
            # equals() treats NaN as unequal: compare the Python values, NaN as its text
            assert _values(fast_batch.column(name)) == _values(generic_batch.column(name)), name
    assert fast_nulled == generic_nulled


def _values(array: pa.Array) -> list[Any]:
    return [repr(value) if isinstance(value, float) else value for value in array.to_pylist()]


# --- PostgreSQL ----------------------------------------------------------------------------------
@pytest.fixture
def pg(pg_admin: sa.Engine, pg_schema: str) -> Callable[[str], None]:
    def run(sql: str) -> None:
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'SET search_path TO "{pg_schema}"')
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            dbapi.cursor().execute(sql)

    return run


@pytest.fixture
def pg_request(pg_admin: sa.Engine, pg_schema: str) -> Callable[[str], EtlRunRequest]:
    def build(table: str) -> EtlRunRequest:
        return make_request("postgresql", connection_of(pg_admin), table, schema_name=pg_schema)

    return build


def test_postgres_copy_carries_every_type_it_claims(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg(PG_COPY_TYPES)
    copies: list[str] = []
    real_copy = pg_copy.copy_statement
    monkeypatch.setattr(pg_copy, "copy_statement", noting_calls(copies, real_copy))
    used = fast_reads(monkeypatch, pg_copy)
    assert_same(pg_request("copyable"), monkeypatch, batch_rows=700)
    assert used == [True] and copies == ["x"], "COPY did not read the table, once"


def test_postgres_timestamptz_outside_a_utc_session_stays_generic(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its text would carry the session's offsets, which Arrow's cast does not read like psycopg2
    pg(PG_COPY_TYPES)
    monkeypatch.setattr(pg_copy, "_session", lambda _conn: pg_copy._Session(supported=True, utc=False))
    copies: list[str] = []

    def copy_batches(*_args: object) -> Iterator[pa.RecordBatch]:
        copies.append("x")
        return iter(())

    monkeypatch.setattr(pg_copy, "copy_batches", copy_batches)
    used = fast_reads(monkeypatch, pg_copy)
    assert_same(pg_request("copyable"), monkeypatch, batch_rows=1000)
    assert used == [False] and copies == []  # asked, and declined: no COPY


def test_postgres_one_column_of_empty_strings_and_nulls(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given rows whose COPY text is an empty line ('') or \N (NULL)
    pg("CREATE TABLE one (t text); INSERT INTO one VALUES (''), (NULL), (''), ('x')")
    used = fast_reads(monkeypatch, pg_copy)
    batches, _ = read_all(pg_request("one"), 10)
    assert [v for b in batches for v in b.column("t").to_pylist()] == ["", None, "", "x"]
    assert_same(pg_request("one"), monkeypatch)
    assert used == [True, True]  # both reads on the default path went through COPY


def test_postgres_window_is_the_same_on_copy(
    pg: Callable[[str], None], pg_admin: sa.Engine, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg("CREATE TABLE ev AS SELECT g AS id, timestamptz '2024-01-01 00:00+00' + g * interval '1 s' AS ts "
       "FROM generate_series(1, 5000) g")
    request = make_request("postgresql", connection_of(pg_admin), "ev", schema_name=pg_schema,
                           timestamp_column="ts", last_sync_value="2024-01-01T00:10:00+00:00")
    used = fast_reads(monkeypatch, pg_copy)
    with get_source("postgresql").snapshot(request) as snap:
        window = snap.plan_window(["2024-01-01T00:10:00+00:00"], lag_s=0)
        rows = [r for b in snap.iter_batches(window, 999) for r in b.column("id").to_pylist()]
        assert sorted(rows) == list(range(600, 5001))  # [00:10, the end]: none missing, none twice
        assert snap.count_rows(window) == len(rows)
    assert used == [True]


def test_postgres_types_copy_cannot_carry_stay_generic(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg(PG_ALL_TYPES)  # arrays and time: the whole table stays on the generic path
    copies: list[str] = []
    real_copy = pg_copy.copy_statement
    monkeypatch.setattr(pg_copy, "copy_statement", noting_calls(copies, real_copy))
    used = fast_reads(monkeypatch, pg_copy)
    assert_same(pg_request("all_types"), monkeypatch)
    assert used == [False] and copies == []  # COPY was asked, declined, and never ran


def test_postgres_empty_table(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg("CREATE TABLE e (a int, j jsonb)")
    used = fast_reads(monkeypatch, pg_copy)
    assert read_all(pg_request("e"), 10) == ([], {})
    assert used == [True]  # COPY's empty stream, not the generic path's


def test_a_copy_error_is_raised_not_swallowed(
    pg: Callable[[str], None], pg_request: Callable[[str], EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 10) g")
    monkeypatch.setattr(pg_copy, "copy_statement", lambda *_: "COPY (SELECT 1/0) TO STDOUT WITH (FORMAT csv)")
    with pytest.raises(Exception, match="division by zero"):
        read_all(pg_request("t"), 10)


# --- MySQL ----------------------------------------------------------------------------------------
# Every type the raw reader carries, with the values where it could go wrong: NULL against '' and
# the text '\N', separators, tabs and newlines, zero dates and a zero month, a TINYINT(1) holding 2,
# -0, the extremes of each integer, and JSON that json_text rewrites, refuses or keeps.
MYSQL_RAW_TYPES = r"""
CREATE TABLE raw_types (
  id int, b tinyint(1), ti tinyint, si smallint unsigned, mi mediumint, i int unsigned, bi bigint,
  bu bigint unsigned, dc decimal(12, 3), dw decimal(65, 30), f float, d double, ch char(3),
  vc varchar(20), tx text, en enum('x', 'y'), st set('a', 'b', 'c'), bl blob, bn binary(3),
  vb varbinary(5), yr year, dt date, dtm datetime(6), ts timestamp(6) NULL, js json
) CHARACTER SET utf8mb4;
INSERT INTO raw_types VALUES
 (1, 1, -128, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615,
  123456789.123, '12345678901234567890123456789012345.123456789012345678901234567890', 1.5,
  1.0000000000000002, 'ab ', 'héllo 🎉', 'a\tb\nc\\d "q", ''s''', 'y', 'c,a', x'00ff', 'ab', x'0102',
  2024, '2024-02-29', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456',
  '{"b": [1, 2.50], "a": "é, x: y", "f": 18446744073709551615}'),
 (2, 0, 0, 0, 0, 0, 0, 0, '-0.000', 0, -0, -0, '', '', '\\N', 'x', '', '', '', '', 0, '0000-00-00',
  '0000-00-00 00:00:00', NULL, '{"a" : 1.5e3, "b": "x\\u00e9, y"}'),
 (3, 2, 127, NULL, 8388607, NULL, 9223372036854775807, NULL, -0.001, NULL, 3.4e38, 1e-300, NULL,
  NULL, NULL, NULL, 'a,b,c', NULL, NULL, NULL, 1901, '2024-00-10', '0001-01-01 00:00:00',
  '1970-01-01 00:00:01', '[12345678901234567890123, 0.0000001]'),
 (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999',
  '{"a": 1, "a": 2}'),
 (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'null');
INSERT INTO raw_types (id, js, vc, dt)
  SELECT seq, JSON_OBJECT('k', seq, 'p', seq / 4, 's', CONCAT('v', seq)), REPEAT('x', seq %% 20),
         DATE '2024-01-01' + INTERVAL seq DAY
  FROM seq_6_to_2600
"""


@pytest.fixture
def my(mysql_admin: sa.Engine, mysql_db: str) -> Callable[[str], None]:
    # CHECK constraints off: MariaDB's JSON column refuses invalid JSON otherwise
    return mysql_runner(mysql_admin, mysql_db, UTC_PERMISSIVE + ", check_constraint_checks = 0")


@pytest.fixture
def my_request(mysql_admin: sa.Engine, mysql_db: str) -> Callable[..., EtlRunRequest]:
    return mysql_requests(mysql_admin, mysql_db)


def _raw_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each raw read, so a test knows the raw reader (not the generic path) ran."""
    reads: list[str] = []
    real = mysql_raw.raw_statement
    monkeypatch.setattr(mysql_raw, "raw_statement", noting_calls(reads, real))
    return reads


def test_mysql_raw_reads_carry_every_type_they_claim(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    my(MYSQL_RAW_TYPES)
    my("INSERT INTO raw_types (id, js) VALUES (2601, 'not json'), (2602, '{\"a\": [1, 2')")
    reads = _raw_reads(monkeypatch)
    used = fast_reads(monkeypatch, mysql_raw)
    assert_same(my_request("raw_types"), monkeypatch, batch_rows=700)
    assert reads == ["x"] and used == [True]
    _batches, nulled = read_all(my_request("raw_types"), 700)
    assert nulled == {"b": 1, "dt": 2, "dtm": 1, "js": 3}  # 2; a zero date, a zero month; bad JSON
    assert used == [True, True]


def _raw_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each raw read's statement, as sent."""
    statements: list[str] = []
    real = mysql_raw.raw_statement

    def noted(*args: Any, **kwargs: Any) -> str:
        statements.append(real(*args, **kwargs))
        return statements[-1]

    monkeypatch.setattr(mysql_raw, "raw_statement", noted)
    return statements


@pytest.mark.parametrize("lines", [False, True])
def test_mysql_raw_reads_send_dates_and_json_as_columns_not_casts(
    lines: bool, my: Callable[[str], None], my_request: Callable[..., EtlRunRequest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The generic SELECT casts DATE, DATETIME, TIMESTAMP and JSON to text; the raw reader selects
    # the columns themselves, whose protocol text is the cast's (the tests above prove the values
    # equal), since the casts cost the server more CPU than the rest of the row
    my(MYSQL_RAW_TYPES)
    statements = _raw_statements(monkeypatch)
    columns = ["id", "dc", "dt", "dtm", "ts", "js", *([] if lines else ["bl"])]
    read_all(my_request("raw_types", selected_columns=columns), 700)
    (statement,) = statements
    assert "AS CHAR" not in statement.upper() and ("CONCAT_WS" in statement.upper()) is lines, statement


def _random_doubles(count: int, seed: int) -> list[float]:
    """Finite doubles of random bit patterns (every exponent, subnormals, both signs) and the ones
    that go wrong first: the extremes, the smallest subnormal, 1 + ulp, -0."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, 2**64, size=4 * count, dtype=np.uint64, endpoint=False).view(np.float64)
    chosen = [float(x) for x in drawn[np.isfinite(drawn)][:count]]
    edges = [sys.float_info.max, -sys.float_info.max, 5e-324, -5e-324, sys.float_info.min,
             1.0000000000000002, 0.1, 1 / 3, -0.0, 0.0, 2.0**53 + 2]
    return [*edges, *chosen]


@pytest.mark.parametrize("lines", [False, True])
def test_mariadb_doubles_read_as_their_bits_are_the_generic_values_bit_for_bit(
    lines: bool, my: Callable[[str], None], my_request: Callable[..., EtlRunRequest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MariaDB's DOUBLE is sent as its eight bytes (worker/sources/mysql_doubles.py); the generic
    # path reads the server's text. 3,000 random bit patterns, NULLs among them, both forms
    doubles = _random_doubles(3000, seed=16)
    rows = ", ".join(f"({i}, {d!r}, {'NULL' if i % 97 == 0 else d!r}, x'ff')" for i, d in enumerate(doubles))
    my(f"CREATE TABLE dbl (id int, d double, n double, b blob); INSERT INTO dbl VALUES {rows}")
    statements = _raw_statements(monkeypatch)
    request = my_request("dbl", selected_columns=["id", "d", "n", *([] if lines else ["b"])])
    fast, _ = read_all(request, 700)
    with generic_path(monkeypatch):
        generic, _ = read_all(request, 700)
    assert len(statements) == 1 and statements[0].lower().count("column_create") == 2, statements
    for name in ("d", "n"):
        fast_values = pa.concat_arrays([b.column(name) for b in fast])
        generic_values = pa.concat_arrays([b.column(name) for b in generic])
        assert fast_values.is_null().equals(generic_values.is_null()), name
        fast_bits, generic_bits = (np.asarray(v.fill_null(0.0)).view(np.uint64)
                                   for v in (fast_values, generic_values))
        assert np.array_equal(fast_bits, generic_bits), name  # -0.0 and 0.0 told apart, unlike ==
    assert len(set(pa.concat_arrays([b.column("d") for b in fast]).to_pylist())) > 2900  # not vacuous


_BYTES_COLUMNS = {"bl", "bn", "vb"}


def test_mysql_raw_lines_carry_every_type_they_claim(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its BLOB and BINARY columns the table is read one line per row: the same values, the
    # same NULLs ('' and the text '\N' against NULL), the same counts
    my(MYSQL_RAW_TYPES)
    my("INSERT INTO raw_types (id, js) VALUES (2601, 'not json'), (2602, '{\"a\": [1, 2')")
    everything = ["id", "b", "ti", "si", "mi", "i", "bi", "bu", "dc", "dw", "f", "d", "ch", "vc", "tx", "en",
                  "st", "bl", "bn", "vb", "yr", "dt", "dtm", "ts", "js"]
    names = [name for name in everything if name not in _BYTES_COLUMNS]
    request = my_request("raw_types", selected_columns=names)
    forms = line_forms(monkeypatch)
    assert_same(request, monkeypatch, batch_rows=700)
    assert forms == [True]
    _batches, nulled = read_all(request, 700)
    assert nulled == {"b": 1, "dt": 2, "dtm": 1, "js": 3}


def test_mysql_raw_lines_only_where_every_text_is_utf8(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under CONCAT_WS's binary separator a latin1 value would arrive unconverted (é as E9): such a
    # table, or one with a BLOB, is read value by value, with the same result
    my("CREATE TABLE lat (id int, t varchar(10) CHARACTER SET latin1, u varchar(10)) CHARACTER SET utf8mb4; "
       "INSERT INTO lat VALUES (1, 'é ÿ', 'é'), (2, NULL, ''), (3, '', NULL); "
       "CREATE TABLE blb (id int, b blob); INSERT INTO blb VALUES (1, x'fffe00'), (2, NULL)")
    forms = line_forms(monkeypatch)
    assert_same(my_request("lat"), monkeypatch, batch_rows=2)
    assert_same(my_request("lat", selected_columns=["id", "u"]), monkeypatch, batch_rows=2)
    assert_same(my_request("blb"), monkeypatch)
    assert_same(my_request("blb", selected_columns=["id"]), monkeypatch)
    assert forms == [False, False, False, True]  # a latin1 column anywhere in the table: no lines


def test_mysql_raw_window_is_the_generic_window(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    my("CREATE TABLE ev (id int, ts timestamp(6) NULL, n varchar(5)); "
       "INSERT INTO ev SELECT seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND, 'a%%' "
       "FROM seq_1_to_5000")
    request = my_request("ev", load_type="transactional", timestamp_column="ts",
                         last_sync_value="2024-01-01T00:10:00+00:00")
    reads = _raw_reads(monkeypatch)
    with get_source("mysql").snapshot(request) as snap:
        window = snap.plan_window(["2024-01-01T00:10:00+00:00"], lag_s=0)
        rows = [r for b in snap.iter_batches(window, 999) for r in b.column("id").to_pylist()]
        assert sorted(rows) == list(range(600, 5001))  # [00:10, the end]: none missing, none twice
        assert snap.count_rows(window) == len(rows)
    assert reads == ["x"]


def test_mysql_an_early_stop_leaves_the_snapshot_usable(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    my("CREATE TABLE t (a int); INSERT INTO t SELECT seq FROM seq_1_to_3000")
    used = fast_reads(monkeypatch, mysql_raw)
    with get_source("mysql").snapshot(my_request("t")) as snap:
        batches = snap.iter_batches(None, 100)
        assert isinstance(batches, Generator)
        first = next(batches)
        assert first.num_rows == 100
        batches.close()  # the early stop: the raw reader's unbuffered result is left unread
        assert snap.count_rows(None) == 3000  # the connection answers again
    assert used == [True]


def test_mysql_a_raw_read_error_is_raised_not_swallowed(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    my("CREATE TABLE t (a int); INSERT INTO t SELECT seq FROM seq_1_to_10")
    monkeypatch.setattr(mysql_raw, "raw_statement", lambda *_: "SELECT a FROM no_such_table")
    with pytest.raises(Exception, match="no_such_table"):
        read_all(my_request("t"), 10)


# --- MySQL and SQLite (the generic path's own speed-ups) -------------------------------------------
def test_mysql_fast_generic_path(
    my: Callable[[str], None], my_request: Callable[..., EtlRunRequest], monkeypatch: pytest.MonkeyPatch
) -> None:
    my(MYSQL_ALL_TYPES)  # BIT and TIME: the generic path, with its own speed-ups
    my("INSERT INTO all_types (b, js) VALUES (1, '{\"a\" : 1.5e3, \"b\": \"x\\\\u00e9, y\"}'), "
       "(0, '[12345678901234567890123, 0.0000001]'), (2, 'null')")
    reads = _raw_reads(monkeypatch)
    used = fast_reads(monkeypatch, mysql_raw)
    built = fast_columns(monkeypatch)
    request = my_request("all_types")
    assert_same(request, monkeypatch)
    assert used == [False] and reads == []  # the raw reader was asked, declined, and never read
    batches, _ = read_all(request, 1000)
    names = batches[0].schema.names
    assert built == names * len(batches) * 2  # each column of each batch, in both default reads


def test_sqlite_fast_generic_path(sqlite_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = sqlite3.connect(sqlite_path, isolation_level=None)
    conn.executescript(
        """CREATE TABLE t (i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC(10, 2), nu NUMERIC, ok BOOLEAN,
                           d DATE, dt DATETIME, tm TIME, js JSON);
        INSERT INTO t VALUES (-9223372036854775808, 0.1, 'héllo', x'00ff', 12.34, 0.0000001, 1,
                              '2024-02-29', '2024-01-02 03:04:05.123456', '23:59:59.999999',
                              '{"a": [1, 2.50], "b": 1e400}');
        INSERT INTO t VALUES ('text', 'x', 5, 'y', 'z', NULL, 2, 'not a date', 17, 'noon', '[1, 2]');
        INSERT INTO t VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""
    )
    conn.close()
    built = fast_columns(monkeypatch)
    assert_same(make_request("sqlite", {"database": str(sqlite_path)}, "t"), monkeypatch)
    assert built == ["i", "r", "t", "b", "n", "nu", "ok", "d", "dt", "tm", "js"]  # one batch, fast
