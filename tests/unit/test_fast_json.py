"""The fast JSON column builder gives json_text's exact result and NULL counts (pure logic)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.columns import Column
from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import json_text
from worker.sources.fastpath import fast_column_array

COLUMN = Column("doc", "json", pa.string(), "JSON")

# Values whose spelling matters: repeated keys, separators and escapes in strings, numbers json_text
# spells differently (1e2, 0.0000001, -0, long digit runs) or refuses (beyond FLOAT64 and UINT64).
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(["0.50", "1.0", "-0", "-0.0", "1e2", "1E-7", "0.0000001", "0.1000000000000000055511",
                     "123456789012.345", "18446744073709551616", "2.50"]).map(lambda t: _Raw(t)),
    st.text(alphabet=st.sampled_from(list('ab, :"\\é\n\x01{}[]')), max_size=6),
)


class _Raw(str):
    """A number written exactly as given."""


def _spell(value: Any, spaced: bool, depth: int = 0) -> str:
    comma, colon = (", ", ": ") if spaced else (",", ":")
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + comma.join(f"{json.dumps(k, ensure_ascii=False)}{colon}{_spell(v, spaced)}"
                                for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + comma.join(_spell(v, spaced) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        # a dict as a list of pairs, so that a key may repeat
        st.lists(st.tuples(st.sampled_from(["a", "b", "a, b", "k: v", "é"]), inner), max_size=4).map(
            lambda pairs: _Pairs(pairs)),
    ),
    max_leaves=12,
)


class _Pairs(list[tuple[str, Any]]):
    pass


def _text(value: Any, spaced: bool) -> str:
    if isinstance(value, _Pairs):
        return _spell_pairs(value, spaced)
    return _spell(value, spaced)


def _spell_pairs(pairs: _Pairs, spaced: bool) -> str:
    comma, colon = (", ", ": ") if spaced else (",", ":")
    return "{" + comma.join(f"{json.dumps(k, ensure_ascii=False)}{colon}{_text(v, spaced)}"
                            for k, v in pairs) + "}"


_texts = st.one_of(
    st.tuples(_documents, st.booleans()).map(lambda pair: _text(*pair)),
    st.text(max_size=12),  # anything at all, JSON or not
    st.sampled_from(["[1,2", "1,2", '{"a":1} ', ' {"a":1}', '{"a" :1}', "[[[[]]]]", "null", "", "[1]\n"]),
    st.none(),
)


def _both(values: list[str | None]) -> tuple[list[Any], dict[str, int], list[Any], dict[str, int]]:
    fast_nulled, generic_nulled = NulledValues(), NulledValues()
    fast = fast_column_array(values, COLUMN, json_text, fast_nulled).to_pylist()
    generic = column_array(values, COLUMN, json_text, generic_nulled).to_pylist()
    return fast, fast_nulled.counts, generic, generic_nulled.counts


@settings(max_examples=400, deadline=None)
@given(st.lists(_texts, max_size=30))
def test_fast_json_column_is_json_text(values: list[str | None]) -> None:
    fast, fast_counts, generic, generic_counts = _both(values)
    assert fast == generic
    assert fast_counts == generic_counts


def test_a_batch_of_clean_documents_is_kept_as_compacted() -> None:
    values = ['{"sku": "S1", "qty": 1, "price": 0.50, "tags": ["a", "b"]}'] * 50 + [None]
    fast, _counts, generic, _ = _both(values)
    assert fast == generic
    assert fast[0] == '{"sku":"S1","qty":1,"price":0.50,"tags":["a","b"]}'


def test_deep_documents_are_decided_by_json_text() -> None:
    deep = "[" * 900 + "]" * 900
    fast, fast_counts, generic, generic_counts = _both([deep, "[1, 2]"])
    assert fast[1] == generic[1] == "[1,2]"
    assert fast == generic and fast_counts == generic_counts
