"""The type mapping as a table, its rules and converters, cursor parsing, the registry and the docs."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects import postgresql as pg

from worker.errors import ConfigurationError
from worker.sources import DIALECTS, get_source, types_markdown
from worker.sources import mysql as mysql_source
from worker.sources import postgresql as pg_source
from worker.sources import sqlite as sqlite_source
from worker.sources import typemap as tm
from worker.sources.sqlalchemy_source import SqlAlchemySource, parse_cursor

NUM = pa.decimal128(38, 9)
BIGNUM = pa.decimal256(76, 38)
TS = pa.timestamp("us")
TSZ = pa.timestamp("us", tz="UTC")
PG, MY, LITE = pg_source.TYPES, mysql_source.TYPES, sqlite_source.TYPES

# (dialect table, reflected type, Arrow type, BigQuery type, repeated); None: unsupported.
MAPPING_TABLE: list[tuple[tm.TypeTable, Any, pa.DataType | None, str | None, bool]] = [
    # PostgreSQL
    (PG, pg.SMALLINT(), pa.int64(), "INT64", False),
    (PG, pg.INTEGER(), pa.int64(), "INT64", False),
    (PG, pg.BIGINT(), pa.int64(), "INT64", False),
    (PG, pg.NUMERIC(12, 3), NUM, "NUMERIC", False),
    (PG, pg.NUMERIC(38, 9), NUM, "NUMERIC", False),
    (PG, pg.NUMERIC(39, 9), BIGNUM, "BIGNUMERIC", False),
    (PG, pg.NUMERIC(20, 10), BIGNUM, "BIGNUMERIC", False),
    (PG, pg.NUMERIC(76, 38), BIGNUM, "BIGNUMERIC", False),
    (PG, pg.NUMERIC(77, 38), pa.string(), "STRING", False),
    (PG, pg.NUMERIC(40, 39), pa.string(), "STRING", False),
    (PG, pg.NUMERIC(5, -2), NUM, "NUMERIC", False),
    (PG, pg.NUMERIC(), pa.string(), "STRING", False),
    (PG, pg.REAL(), pa.float64(), "FLOAT64", False),
    (PG, pg.DOUBLE_PRECISION(), pa.float64(), "FLOAT64", False),
    (PG, pg.BOOLEAN(), pa.bool_(), "BOOL", False),
    (PG, pg.TEXT(), pa.string(), "STRING", False),
    (PG, pg.VARCHAR(10), pa.string(), "STRING", False),
    (PG, pg.CHAR(3), pa.string(), "STRING", False),
    (PG, pg.BYTEA(), pa.binary(), "BYTES", False),
    (PG, pg.DATE(), pa.date32(), "DATE", False),
    (PG, pg.TIME(), pa.time64("us"), "TIME", False),
    (PG, pg.TIME(timezone=True), pa.string(), "STRING", False),
    (PG, pg.TIMESTAMP(), TS, "DATETIME", False),
    (PG, pg.TIMESTAMP(timezone=True), TSZ, "TIMESTAMP", False),
    (PG, pg.JSON(), pa.string(), "JSON", False),
    (PG, pg.JSONB(), pa.string(), "JSON", False),
    (PG, pg.UUID(), pa.string(), "STRING", False),
    (PG, pg.INET(), pa.string(), "STRING", False),
    (PG, pg.CIDR(), pa.string(), "STRING", False),
    (PG, pg.INTERVAL(), pa.string(), "STRING", False),
    (PG, pg.ENUM("a", "b", name="mood"), pa.string(), "STRING", False),
    (PG, pg.MONEY(), NUM, "NUMERIC", False),
    (PG, pg.ARRAY(pg.INTEGER()), pa.list_(pa.int64()), "INT64", True),
    (PG, pg.ARRAY(pg.NUMERIC(10, 2)), pa.list_(NUM), "NUMERIC", True),
    (PG, pg.ARRAY(pg.TEXT()), pa.list_(pa.string()), "STRING", True),
    (PG, pg.ARRAY(pg.INTERVAL()), pa.list_(pa.string()), "STRING", True),
    (PG, pg.ARRAY(pg.TIME(timezone=True)), pa.list_(pa.string()), "STRING", True),
    (PG, pg.ARRAY(pg.INTEGER(), dimensions=2), None, None, False),
    (PG, sqltypes.NullType(), None, None, False),
    # MySQL / MariaDB
    (MY, mysql.TINYINT(display_width=1), pa.bool_(), "BOOL", False),
    (MY, mysql.BOOLEAN(), pa.bool_(), "BOOL", False),
    (MY, mysql.TINYINT(), pa.int64(), "INT64", False),
    (MY, mysql.SMALLINT(unsigned=True), pa.int64(), "INT64", False),
    (MY, mysql.MEDIUMINT(), pa.int64(), "INT64", False),
    (MY, mysql.INTEGER(unsigned=True), pa.int64(), "INT64", False),
    (MY, mysql.BIGINT(), pa.int64(), "INT64", False),
    (MY, mysql.BIGINT(unsigned=True), NUM, "NUMERIC", False),
    (MY, mysql.DECIMAL(12, 3), NUM, "NUMERIC", False),
    (MY, mysql.DECIMAL(65, 30), BIGNUM, "BIGNUMERIC", False),
    (MY, mysql.DECIMAL(65, 0), pa.string(), "STRING", False),
    (MY, mysql.FLOAT(), pa.float64(), "FLOAT64", False),
    (MY, mysql.DOUBLE(asdecimal=True), pa.float64(), "FLOAT64", False),
    (MY, mysql.CHAR(3), pa.string(), "STRING", False),
    (MY, mysql.VARCHAR(20), pa.string(), "STRING", False),
    (MY, mysql.LONGTEXT(), pa.string(), "STRING", False),
    (MY, mysql.ENUM("x", "y"), pa.string(), "STRING", False),
    (MY, mysql.SET("a", "b"), pa.string(), "STRING", False),
    (MY, mysql.BLOB(), pa.binary(), "BYTES", False),
    (MY, mysql.LONGBLOB(), pa.binary(), "BYTES", False),
    (MY, mysql.BINARY(3), pa.binary(), "BYTES", False),
    (MY, mysql.VARBINARY(5), pa.binary(), "BYTES", False),
    (MY, mysql.BIT(8), pa.int64(), "INT64", False),
    (MY, mysql.BIT(64), NUM, "NUMERIC", False),
    (MY, mysql.YEAR(), pa.int64(), "INT64", False),
    (MY, mysql.DATE(), pa.date32(), "DATE", False),
    (MY, mysql.DATETIME(fsp=6), TS, "DATETIME", False),
    (MY, mysql.TIMESTAMP(fsp=6), TSZ, "TIMESTAMP", False),
    (MY, mysql.TIME(fsp=6), pa.time64("us"), "TIME", False),
    (MY, mysql.JSON(), pa.string(), "JSON", False),
    # SQLite
    (LITE, sqlite.INTEGER(), pa.int64(), "INT64", False),
    (LITE, sqlite.REAL(), pa.float64(), "FLOAT64", False),
    (LITE, sqlite.TEXT(), pa.string(), "STRING", False),
    (LITE, sqlite.BLOB(), pa.binary(), "BYTES", False),
    (LITE, sqlite.NUMERIC(10, 2), NUM, "NUMERIC", False),
    (LITE, sqlite.DECIMAL(), pa.string(), "STRING", False),
    (LITE, sqlite.BOOLEAN(), pa.bool_(), "BOOL", False),
    (LITE, sqltypes.DATE(), pa.date32(), "DATE", False),
    (LITE, sqltypes.DATETIME(), TS, "DATETIME", False),
    (LITE, sqltypes.TIMESTAMP(), TS, "DATETIME", False),
    (LITE, sqltypes.TIME(), pa.time64("us"), "TIME", False),
    (LITE, sqlite.JSON(), pa.string(), "JSON", False),
    (LITE, sqltypes.NullType(), None, None, False),
]


@pytest.mark.parametrize(
    ("table", "sa_type", "arrow_type", "bq_type", "repeated"),
    MAPPING_TABLE,
    ids=[f"{row[1]!r}" for row in MAPPING_TABLE],
)
def test_mapping_table(
    table: tm.TypeTable, sa_type: Any, arrow_type: pa.DataType | None, bq_type: str | None, repeated: bool
) -> None:
    target = tm.lookup(sa_type, table)
    if bq_type is None:
        assert target is None
        return
    assert target is not None
    assert (target.arrow_type, target.bq_type, target.repeated) == (arrow_type, bq_type, repeated)


@pytest.mark.parametrize(
    ("precision", "scale", "bq_type"),
    [
        (1, 0, "NUMERIC"),
        (29, 0, "NUMERIC"),
        (30, 0, "BIGNUMERIC"),
        (38, 9, "NUMERIC"),
        (10, 10, "BIGNUMERIC"),
        (38, 0, "BIGNUMERIC"),
        (39, 0, "STRING"),
        (38, 38, "BIGNUMERIC"),
        (39, 39, "STRING"),
        (3, 5, "NUMERIC"),  # PostgreSQL 15 allows scale > precision: 0.00xyz
        (None, None, "STRING"),
    ],
)
def test_numeric_rule(precision: int | None, scale: int | None, bq_type: str) -> None:
    assert tm.numeric_target(precision, scale).bq_type == bq_type


def test_dialect_entry_wins_over_generic() -> None:
    # Given a generic DateTime rule (SQLAlchemy processing) and SQLite's override (raw text)
    generic = tm.lookup(sqltypes.DATETIME(), {})
    lite = tm.lookup(sqltypes.DATETIME(), LITE)
    # Then SQLite's entry is used for SQLite only
    assert generic is not None and generic.read == "native"
    assert lite is not None and lite.read == "raw"


def test_most_specific_class_wins() -> None:
    class Custom(mysql.BIGINT):
        pass

    # A subclass of a mapped class inherits its rule, parameters included.
    target = tm.lookup(Custom(unsigned=True), MY)
    assert target is not None and target.bq_type == "NUMERIC"


def test_array_rule_reads_text_elements_as_text_array() -> None:
    target = tm.lookup(pg.ARRAY(pg.INTERVAL()), PG)
    assert target is not None and target.read == "text" and target.repeated


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2], [1, 2]),
        ([], []),
        ([1, None], None),  # BigQuery arrays cannot hold NULL elements
        ([[1, 2], [3, 4]], None),  # nor nested arrays
    ],
)
def test_array_converter(values: list[Any], expected: list[Any] | None) -> None:
    target = tm.lookup(pg.ARRAY(pg.INTEGER()), PG)
    assert target is not None and target.convert is not None
    assert target.convert(values) == expected


def test_array_converter_applies_the_element_converter() -> None:
    target = tm.lookup(pg.ARRAY(pg.NUMERIC()), PG)
    assert target is not None and target.convert is not None
    assert target.convert([Decimal("1E-7"), Decimal("NaN")]) == ["0.0000001", "NaN"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, "b": [true, null]}', '{"a":1,"b":[true,null]}'),
        ('{"é": "🎉"}', '{"é":"🎉"}'),
        ('{"f": 1.10000000000000000001}', '{"f":1.10000000000000000001}'),
        ("[12345678901234567890123, 2.50, 1e400]", "[12345678901234567890123,2.50,1E+400]"),
        ('{"nested": {"x": [0.1, "s\\"q"]}}', '{"nested":{"x":[0.1,"s\\"q"]}}'),
        ('"just text"', '"just text"'),
    ],
)
def test_compact_json_keeps_numbers_exact(text: str, expected: str) -> None:
    assert tm.compact_json(tm.loads_exact(text)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("12345678901234567890.123456789012345678901"), "12345678901234567890.123456789012345678901"),
        (Decimal("1E+5"), "100000"),
        (Decimal("NaN"), "NaN"),
        (Decimal("-Infinity"), "-Infinity"),
        (0.1, "0.1"),
        (7, "7"),
    ],
)
def test_decimal_text(value: Any, expected: str) -> None:
    assert tm.decimal_text(value) == expected


def test_finite_decimal() -> None:
    assert tm.finite_decimal(Decimal("1.5")) == Decimal("1.5")
    assert tm.finite_decimal(Decimal("NaN")) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), time(0)),
        (timedelta(hours=23, minutes=59, seconds=59, microseconds=999999), time(23, 59, 59, 999999)),
        (timedelta(hours=24), None),
        (timedelta(hours=25), None),
        (timedelta(hours=-1), None),
    ],
)
def test_mysql_time_of_day(value: timedelta, expected: time | None) -> None:
    assert mysql_source.time_of_day(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02 03:04:05.123456", datetime(2024, 1, 2, 3, 4, 5, 123456)),
        ("2024-01-02T03:04:05", datetime(2024, 1, 2, 3, 4, 5)),
        ("2024-01-02 03:04:05+02:00", datetime(2024, 1, 2, 1, 4, 5)),
        ("2024-01-02", datetime(2024, 1, 2)),
        ("not a date", None),
        (1700000000, None),
    ],
)
def test_sqlite_datetime_from_text(value: Any, expected: datetime | None) -> None:
    assert sqlite_source.datetime_from_text(value) == expected


def test_sqlite_date_and_time_from_text() -> None:
    assert sqlite_source.date_from_text("2024-02-29") == date(2024, 2, 29)
    assert sqlite_source.date_from_text("2024-02-30") is None
    assert sqlite_source.time_from_text("23:59:59.5") == time(23, 59, 59, 500000)
    assert sqlite_source.time_from_text(b"12:00") is None


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("2024-01-02T03:04:05.000001", "zoned", datetime(2024, 1, 2, 3, 4, 5, 1, tzinfo=UTC)),
        ("2024-01-02T03:04:05+02:00", "zoned", datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", "zoned", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", "zoned", datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02 03:04:05.123456", "naive", datetime(2024, 1, 2, 3, 4, 5, 123456)),
        ("2024-01-02T03:04:05-01:00", "naive", datetime(2024, 1, 2, 4, 4, 5)),
        ("2024-01-02", "date", date(2024, 1, 2)),
        ("2024-01-02T23:00:00", "date", date(2024, 1, 2)),
        (" 42 ", "integer", 42),
        ("-9223372036854775808", "integer", -(2**63)),
    ],
)
def test_parse_cursor(text: str, kind: Any, expected: Any) -> None:
    parsed = parse_cursor(text, kind)
    assert parsed == expected and type(parsed) is type(expected)
    if isinstance(expected, datetime):
        assert isinstance(parsed, datetime) and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    ("text", "kind"), [("yesterday", "zoned"), ("4.5", "integer"), ("2024-13-01", "date")]
)
def test_parse_cursor_refuses_bad_text(text: str, kind: Any) -> None:
    with pytest.raises(ConfigurationError, match="cursor value"):
        parse_cursor(text, kind)


def test_registry() -> None:
    for name in ("postgresql", "mysql", "sqlite"):
        source = get_source(name)
        assert isinstance(source, SqlAlchemySource) and source.name == name
    with pytest.raises(ConfigurationError, match="mysql, postgresql, sqlite"):
        get_source("oracle")


# docs/types.md's rows as a reader takes them: each documented source type → the BigQuery column it
# becomes (None: the row says "unsupported"). Written out here, not derived, so that a changed rule
# or example shows as a changed row instead of regenerating a doc that quietly says otherwise.
DOCUMENTED: dict[str, list[tuple[str, str | None]]] = {
    "postgresql": [
        ("smallint, integer, bigint", "INT64"),
        ("numeric(p, s) with s ≤ 9 and p - s ≤ 29", "NUMERIC"),
        ("numeric(p, s) with s ≤ 38 and p - s ≤ 38", "BIGNUMERIC"),
        ("numeric, or wider numeric(p, s)", "STRING"),
        ("real, double precision", "FLOAT64"),
        ("boolean", "BOOL"),
        ("text, varchar(n), char(n)", "STRING"),
        ("bytea", "BYTES"),
        ("date", "DATE"),
        ("time", "TIME"),
        ("time with time zone", "STRING"),
        ("timestamp", "DATETIME"),
        ("timestamp with time zone", "TIMESTAMP"),
        ("json, jsonb", "JSON"),
        ("uuid", "STRING"),
        ("inet, cidr", "STRING"),
        ("interval", "STRING"),
        ("enum types", "STRING"),
        ("money", "NUMERIC"),
        ("integer[] (arrays of any type above)", "INT64 (REPEATED)"),
        ("numeric(10, 2)[]", "NUMERIC (REPEATED)"),
        ("text[], uuid[], inet[], enum[]", "STRING (REPEATED)"),
        ("jsonb[]", "JSON (REPEATED)"),
        ("point, xml, tsvector, ranges, ... (not listed)", None),
    ],
    "mysql": [
        ("TINYINT(1), BOOL", "BOOL"),
        ("TINYINT .. BIGINT; UNSIGNED up to INT", "INT64"),
        ("BIGINT UNSIGNED", "NUMERIC"),
        ("DECIMAL(p, s) with s ≤ 9 and p - s ≤ 29", "NUMERIC"),
        ("DECIMAL(p, s) with s ≤ 38 and p - s ≤ 38", "BIGNUMERIC"),
        ("DECIMAL(p, s), wider", "STRING"),
        ("FLOAT, DOUBLE", "FLOAT64"),
        ("CHAR, VARCHAR, TEXT", "STRING"),
        ("ENUM", "STRING"),
        ("SET", "STRING"),
        ("BLOB, BINARY, VARBINARY", "BYTES"),
        ("BIT(n), n ≤ 63", "INT64"),
        ("BIT(64)", "NUMERIC"),
        ("YEAR", "INT64"),
        ("DATE", "DATE"),
        ("DATETIME", "DATETIME"),
        ("TIMESTAMP", "TIMESTAMP"),
        ("TIME", "TIME"),
        ("JSON (MariaDB: LONGTEXT with json_valid)", "JSON"),
        ("GEOMETRY, POINT, ... (not listed)", None),
    ],
    "sqlite": [
        ("INTEGER (and INT, BIGINT, ...)", "INT64"),
        ("REAL (and FLOAT, DOUBLE)", "FLOAT64"),
        ("TEXT, VARCHAR", "STRING"),
        ("BLOB", "BYTES"),
        ("NUMERIC(p, s), DECIMAL(p, s)", "NUMERIC"),
        ("NUMERIC, DECIMAL (no precision)", "STRING"),
        ("BOOLEAN", "BOOL"),
        ("DATE", "DATE"),
        ("DATETIME, TIMESTAMP", "DATETIME"),
        ("TIME", "TIME"),
        ("JSON", "JSON"),
        ("(no declared type)", None),
    ],
}


def _documented_target(example: tm.TypeExample, table: tm.TypeTable) -> str | None:
    target = tm.lookup(example.sa_type, table)
    if target is None:
        return None
    return f"{target.bq_type} (REPEATED)" if target.repeated else target.bq_type


def test_every_documented_example_is_mapped_or_marked_unsupported() -> None:
    # Each documented row maps to the BigQuery type it states, and exactly the rows marked
    # "(not listed)" / "(no declared type)" are unsupported
    assert set(DIALECTS) == set(DOCUMENTED)
    for name, dialect in DIALECTS.items():
        rows = [(example.source, _documented_target(example, dialect.types)) for example in dialect.examples]
        assert rows == DOCUMENTED[name], name


def test_types_doc_is_current() -> None:
    path = Path(__file__).resolve().parents[2] / "docs" / "types.md"
    assert path.read_text(encoding="utf-8") == types_markdown(), (
        "docs/types.md is stale: .venv/bin/python -c 'import worker.sources as s; s.write_types_doc()'"
    )
