"""Which fields the raw MySQL reader sends as a double's bytes (worker/sources/mysql_doubles.py):
MariaDB DOUBLE columns only; MySQL has no COLUMN_CREATE, and FLOAT's text is the single's."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.sql.sqltypes import NullType

from worker.columns import Column
from worker.sources import typemap as tm
from worker.sources.arrays import NulledValues
from worker.sources.dialect import Field
from worker.sources.mysql_doubles import doubles_from_bits, sent_as_bits


def field(sa_type: Any, target: tm.Target = tm.FLOAT64) -> Field:
    column = sa.Column("w", sa_type)
    return Field(Column("w", "double", pa.float64(), "FLOAT64"), target,
                 sa.type_coerce(column, NullType()).label("w"))


def dialect(mariadb: bool) -> sa.Dialect:
    made = mysql.dialect()
    made.is_mariadb = mariadb
    return made


def test_only_a_mariadb_double_read_raw_is_sent_as_its_bits() -> None:
    assert sent_as_bits(field(mysql.DOUBLE()), dialect(mariadb=True))
    assert not sent_as_bits(field(mysql.DOUBLE()), dialect(mariadb=False))
    assert not sent_as_bits(field(mysql.FLOAT()), dialect(mariadb=True))
    assert not sent_as_bits(field(mysql.DOUBLE(), tm.target("FLOAT64")), dialect(mariadb=True))


def test_the_bits_are_decoded_and_the_empty_set_is_null() -> None:
    texts = pa.array([b"000100010002AE47E17A14AED73F", b"000000", b"0001000100020000000000000080"])
    values = doubles_from_bits(texts, field(mysql.DOUBLE()), NulledValues())
    assert values.to_pylist()[:2] == [0.37, None] and str(values[2].as_py()) == "-0.0"


@pytest.mark.parametrize("text", [b"0001000100020000000000000", b"000100010003AE47E17A14AED73F",
                                  b"000100010002AE47E17A14AED7ZZ", b"000001"])
def test_any_other_text_is_an_error_not_a_guess(text: bytes) -> None:
    with pytest.raises(RuntimeError, match="dynamic column"):
        doubles_from_bits(pa.array([text]), field(mysql.DOUBLE()), NulledValues())
