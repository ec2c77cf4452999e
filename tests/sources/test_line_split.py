"""MySQL's one-line-per-row reads (`mysql_raw._line_columns`): the numpy split gives, per column,
exactly what splitting each line at 0xFF and reading 0xFE as NULL gives, and refuses a line with
more or fewer values than columns."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from worker.sources import mysql_raw


class Cursor:
    def __init__(self, lines: list[bytes]) -> None:
        self.rows = [(line,) for line in lines]

    def fetchmany(self, size: int) -> list[tuple[bytes]]:
        taken, self.rows = self.rows[:size], self.rows[size:]
        return taken


def expected(lines: list[bytes], width: int) -> list[list[bytes | None]]:
    split = [line.split(b"\xff") for line in lines]
    return [[None if row[c] == b"\xfe" else row[c] for row in split] for c in range(width)]


def value(rng: random.Random) -> bytes:
    return rng.choice([b"", b"\xfe", "é".encode() * rng.randint(0, 3), b"x" * rng.randint(1, 40),
                       b"\xfe\xfe", b"a\xfe", b"0"])


@pytest.mark.parametrize("width", [1, 2, 3, 10])
def test_split_matches_splitting_each_line(width: int) -> None:
    rng = random.Random(width)
    for _ in range(50):
        lines = [b"\xff".join(value(rng) for _ in range(width)) for _ in range(rng.randint(1, 30))]
        columns = mysql_raw._line_columns(Cursor(lines), 1000, width)
        assert columns is not None
        assert [c.to_pylist() for c in columns] == expected(lines, width)
        assert all(c.type == pa.binary() for c in columns)


def test_all_empty_values() -> None:
    columns = mysql_raw._line_columns(Cursor([b"", b""]), 10, 1)
    assert columns is not None and columns[0].to_pylist() == [b"", b""]


def test_the_end_is_none() -> None:
    assert mysql_raw._line_columns(Cursor([]), 10, 3) is None


@pytest.mark.parametrize(("lines", "width"), [
    ([b"a\xffb\xffc\xffd", b"a\xffb"], 3),  # the total is right, the rows are not
    ([b"a\xffb", b"a\xffb\xffc\xffd"], 3),
    ([b"a\xffb\xffc", b"a\xffb"], 3),
    ([b"ab", b"c"], 2),
    ([b"a\xffb"], 1),
])
def test_a_line_with_other_than_one_value_per_column_is_refused(lines: list[bytes], width: int) -> None:
    with pytest.raises(RuntimeError, match="0xFF"):
        mysql_raw._line_columns(Cursor(lines), 10, width)
