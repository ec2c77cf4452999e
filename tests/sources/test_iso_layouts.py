"""`columnar._fixed_width_iso` decides exactly what the strict ISO regex decides (pure logic)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sources import columnar

_CHARS = st.sampled_from([*"0123456789-: T.x/", "0", "1", "9"])  # digits weigh more
_SAMPLES = ["2024-01-02", "0000-01-02", "0001-01-01", "2024-01-02 03:04:05", "2024-01-02T03:04:05.123456",
            "2024-01-02 03:04:05.1", "2024-01-02 03:04:05.", "0000-00-00 00:00:00.000000", "2024/01/02"]


@st.composite
def _columns(draw: st.DrawFn) -> tuple[str, list[str]]:
    pattern = draw(st.sampled_from([columnar.ISO_DATE, columnar.ISO_DATETIME]))
    width = draw(st.sampled_from([9, 10, 11, 19, 20, 21, 23, 26, 27]))
    base = draw(st.sampled_from(_SAMPLES))
    texts = [draw(st.one_of(st.just(base), st.text(_CHARS, min_size=width, max_size=width),
                            st.just(base[:-1] + draw(_CHARS)))) for _ in range(draw(st.integers(1, 6)))]
    return pattern, texts


@settings(max_examples=1500, deadline=None)
@given(_columns())
def test_the_layout_says_what_the_regex_says(column: tuple[str, list[str]]) -> None:
    pattern, texts = column
    whole = pa.array(["padding", *texts], pa.string())
    for array in (pa.array(texts, pa.string()), whole.slice(1)):  # a slice reads its own offsets
        by_layout = columnar._fixed_width_iso(array, pattern)
        by_regex = pc.all(pc.match_substring_regex(array, pattern=pattern)).as_py()
        assert by_layout is None or by_layout == by_regex


def test_a_padded_timestamp_column_is_decided_by_its_layout() -> None:
    texts = pa.array(["2024-01-01 00:00:01.000000", "1999-12-31T23:59:59.999999"])
    assert columnar._fixed_width_iso(texts, columnar.ISO_DATETIME) is True
    assert columnar._fixed_width_iso(pa.array(["0000-01-01"]), columnar.ISO_DATE) is False
    assert columnar._fixed_width_iso(pa.array(["2024-01-01", None]), columnar.ISO_DATE) is None
