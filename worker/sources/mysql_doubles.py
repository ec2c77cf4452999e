"""MariaDB DOUBLE columns sent as their eight bytes rather than as text: part of the raw reader
(`mysql_raw`), isolated here because it is MariaDB's alone.

MariaDB writes a DOUBLE in the text protocol as the shortest text that reads back as the same
double; finding it is the costliest value the server sends (the bench table's `SELECT weight`, 5M
rows: 2.1-2.2 s of server CPU, against 0.7 s for its key alone). A one-value dynamic column,
`COLUMN_CREATE(1, weight)` (MariaDB's own function; MySQL has none), holds the double's eight bytes
as they are, and HEX makes them text the line form can carry: 1.35-1.4 s. The value is the same
one: the text is shortest round-trip (`1.0000000000000002`, `5e-324`), so the float that
mysqlclient's value, and so the generic path, gives is the double these bytes hold, bit for bit
(tests/perf_paths/test_equivalence.py proves it on random bit patterns). FLOAT columns stay text:
their text is the single's shortest, not the double it widens to.
"""

from __future__ import annotations

import binascii
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from worker.sources.arrays import NulledValues
from worker.sources.dialect import Field
from worker.sources.fastpath import inner_expr

# HEX(COLUMN_CREATE(1, x)): a flag byte, one column, column number 1, then its type and offset
# (a double, at 0), then the value's eight bytes, little-endian. A NULL value is not stored: the
# empty set is its three bytes of header.
_HEADER = b"000100010002"
_EMPTY = b"000000"
_WIDTH = len(_HEADER) + 16
_HEADER_BYTES = np.frombuffer(bytes.fromhex(_HEADER.decode()), dtype=np.uint8)


def sent_as_bits(field: Field, dialect: sa.Dialect) -> bool:
    """Whether the raw reader sends this field as its bytes: a MariaDB DOUBLE column, read as the
    driver's float with no converter."""
    target, column = field.target, _column(field)
    return (bool(getattr(dialect, "is_mariadb", False)) and target.convert is None
            and (target.bq_type, target.read, target.repeated) == ("FLOAT64", "raw", False)
            and column is not None and isinstance(column.type, mysql.DOUBLE))


def bits_expr(field: Field) -> sa.ColumnElement[Any]:
    """The field's column as the hex text of a one-value dynamic column (never NULL)."""
    column = _column(field)
    assert column is not None
    return sa.func.hex(sa.func.column_create(1, column))


def doubles_from_bits(raw: pa.Array, field: Field, _nulled: NulledValues) -> pa.Array:
    """The doubles that `bits_expr`'s texts hold (NULL for the empty set). Any other text is an
    error, never a guess: the server's format would have changed."""
    lengths = pc.binary_length(raw).to_numpy(zero_copy_only=False)
    empty, full = lengths == len(_EMPTY), lengths == _WIDTH
    if raw.null_count or not np.all(empty | full):
        raise RuntimeError(f"{field.column.name}: a DOUBLE's dynamic column was not {_WIDTH} hex digits")
    any_empty = bool(empty.any())
    if any_empty and pc.any(pc.not_equal(raw.filter(pa.array(empty)), _EMPTY)).as_py():
        raise RuntimeError(f"{field.column.name}: a DOUBLE's dynamic column had another header")
    values = np.zeros(len(raw), dtype="<f8")
    values[full] = _decoded(raw.filter(pa.array(full)) if any_empty else raw, field)
    return pa.array(values, type=field.target.arrow_type, mask=empty)


def _decoded(texts: pa.Array, field: Field) -> npt.NDArray[np.float64]:
    """The doubles of texts that are all `_WIDTH` long: their hex side by side, decoded in one call
    (the header is hex too), then one row of bytes per value."""
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32, count=len(texts) + 1, offset=4 * texts.offset)
    data = memoryview(texts.buffers()[2] or pa.py_buffer(b""))[offsets[0]:offsets[-1]]
    try:
        decoded = np.frombuffer(binascii.a2b_hex(data), dtype=np.uint8).reshape(len(texts), _WIDTH // 2)
    except binascii.Error:
        raise RuntimeError(f"{field.column.name}: a DOUBLE's dynamic column held a non-hex digit") from None
    if np.any(decoded[:, : len(_HEADER) // 2] != _HEADER_BYTES):
        raise RuntimeError(f"{field.column.name}: a DOUBLE's dynamic column had another header")
    doubles: npt.NDArray[np.float64] = decoded[:, len(_HEADER) // 2:].copy().view("<f8").ravel()
    return doubles


def _column(field: Field) -> sa.Column[Any] | None:
    """The column under the field's read expression ("raw": a type coercion of it), if it is one."""
    expr = inner_expr(field.expr)
    inner = getattr(expr, "clause", expr)
    return inner if isinstance(inner, sa.Column) else None
