"""A converter's fast forms are declared once, with it: no converter reaches a type table without
saying how each fast reader reproduces it (or that it cannot), and the readers consult only that."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, get_args

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.types import TypeEngine

from tests.sources import UTC_PERMISSIVE, mysql_requests, mysql_runner, noting_calls
from tests.sources.test_layering import FAST_READERS, SOURCES
from worker.sources import DIALECTS, fastpath, get_source, mysql_raw
from worker.sources import typemap as tm
from worker.sources.converters import Converter, TextForm, json_text

# Types that walk every branch of the rules (numeric precisions, time zones, arrays, unsigned, BIT).
PROBES: tuple[TypeEngine[Any], ...] = (
    sqltypes.Numeric(), sqltypes.Numeric(10, 2), sqltypes.Numeric(60, 30), sqltypes.Numeric(70, 0),
    sqltypes.DateTime(), sqltypes.DateTime(timezone=True), sqltypes.Time(), sqltypes.Time(timezone=True),
    postgresql.ARRAY(postgresql.NUMERIC(10, 2)), postgresql.ARRAY(postgresql.JSONB()),
    postgresql.ARRAY(postgresql.UUID()), mysql.BIGINT(unsigned=True), mysql.TINYINT(display_width=1),
    mysql.BIT(1), mysql.BIT(64), sqlite.NUMERIC(10, 2), sqlite.NUMERIC(),
)


def every_target() -> Iterator[tuple[str, tm.Target]]:
    """Each dialect's targets: its documented examples and the probes, through its own table."""
    for name, dialect in DIALECTS.items():
        for sa_type in (*(example.sa_type for example in dialect.examples), *PROBES):
            target = tm.lookup(sa_type, dialect.types)
            if target is not None:
                yield f"{name}: {sa_type!r}", target


def test_every_converter_in_a_type_table_declares_its_fast_forms() -> None:
    converters = [(where, target.convert) for where, target in every_target() if target.convert is not None]
    assert len(converters) > 20
    for where, convert in converters:
        assert isinstance(convert, Converter), where


def test_a_converter_cannot_be_declared_without_its_fast_forms() -> None:
    with pytest.raises(TypeError):
        Converter(str)  # type: ignore[call-arg]  # the missing fast forms are what this test is about
    with pytest.raises(TypeError):
        Converter(str, columnar=None, pg_copy=None)  # type: ignore[call-arg]  # as above: no mysql_raw


def test_a_type_table_refuses_a_bare_function() -> None:
    with pytest.raises(TypeError, match="declare its fast forms"):
        tm.target("STRING", convert=str)  # type: ignore[arg-type]  # the bare function is the point


def test_every_fast_reader_has_its_field_in_the_declaration() -> None:
    # A new fast reader (a module with its own fast_batches) needs its own field on Converter, so
    # that every converter must say how that reader carries it.
    readers = {
        path.stem for path in SOURCES.glob("*.py")
        if any(isinstance(node, ast.FunctionDef) and node.name == "fast_batches"
               for node in ast.parse(path.read_text(encoding="utf-8")).body)
    }
    # pg_parallel runs pg_copy's reader on several connections, mysql_ranges mysql_raw's on a key
    # range's own connection: they carry values in those readers' forms; mysql_doubles is a part of
    # mysql_raw (a MariaDB DOUBLE, which has no converter).
    assert readers == FAST_READERS - {"fastpath", "pg_parallel", "mysql_ranges", "mysql_doubles"}
    forms = {form.name for form in dataclasses.fields(Converter)} - {"per_value"}
    assert forms == {"columnar", *readers}


def test_every_text_form_has_its_vectorised_reading() -> None:
    assert set(get_args(TextForm)) == set(fastpath._VECTORISED)


def test_a_converter_is_called_like_its_function() -> None:
    assert json_text('{"a": 1}') == json_text.per_value('{"a": 1}') == '{"a":1}'


# --- the raw MySQL reader plans from the declarations -------------------------------------------
@pytest.fixture
def my(mysql_admin: sa.Engine, mysql_db: str) -> Callable[[str], None]:
    return mysql_runner(mysql_admin, mysql_db, UTC_PERMISSIVE)


def test_mysql_bit64_keeps_the_table_on_the_generic_path(
    my: Callable[[str], None], mysql_admin: sa.Engine, mysql_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # BIT arrives as bytes, not text, whatever BigQuery type it maps to (BIT(64) → NUMERIC): the raw
    # reader once took BIT(64) for BIGINT UNSIGNED text and failed on its bytes.
    my("CREATE TABLE bits (id bigint unsigned, b bit(64)); "
       "INSERT INTO bits VALUES (1, b'1'), (18446744073709551615, "
       "b'1111111111111111111111111111111111111111111111111111111111111111'), (3, NULL)")
    reads: list[str] = []
    real = mysql_raw.raw_statement
    monkeypatch.setattr(mysql_raw, "raw_statement", noting_calls(reads, real))
    with get_source("mysql").snapshot(mysql_requests(mysql_admin, mysql_db)("bits")) as snap:
        batches = list(snap.iter_batches(None, 10))
    table = pa.Table.from_batches(batches)
    assert table.column("b").to_pylist() == [1, 2**64 - 1, None]
    assert reads == []
