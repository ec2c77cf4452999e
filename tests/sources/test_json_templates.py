"""The JSON template proof (`fastjson._templated`): a document matching a template learnt from any
other document, and not risky, is json_text's output once compacted (pure logic, no database)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.columns import Column
from worker.sources import fastjson
from worker.sources.arrays import NulledValues, column_array
from worker.sources.converters import json_text

COLUMN = Column("doc", "json", pa.string(), "JSON")

# Scalars as a source may spell them: the ones json_text rewrites or refuses among them.
_NUMBERS = ["0", "1", "-1", "0.50", "2.50", "1.0", "-0", "-0.0", "00", "01", "1.", ".5", "+1", "1e2", "1E-7",
            "0.0000001", "0.000001", "0.00000012", "0.000000", "123456789012.345", "1234567890123456789",
            "18446744073709551616", "123456789012345", "1234567890123456", "1.12345678901234",
            "0.1000000000000000055511", "NaN", "Infinity", "-", "1-2", "1.2.3"]
_STRINGS = ['"a"', '""', '"a, b"', '"k: v"', '"a,b"', '"a:b"', '"a,"', '",:"', '", "', '"é"', '"\\n"',
            '"\\u0061"', '"a\\"b"', '"tab\there"', '"a""b"', '"{"', '"]"', '"x\x01"', '"\u2028"']
_LITERALS = ["true", "false", "null", "nul", "True", "truefalse"]

_SCALARS = _NUMBERS + _STRINGS + _LITERALS
# Mostly the two spellings json_text keeps; sometimes whitespace it removes.
_SEPARATORS = {mark: [mark, mark, f"{mark} ", f"{mark} ", f"{mark}  ", f"{mark}\n", f" {mark}"]
               for mark in ",:"}
Spell = Callable[[list[str]], str]  # picks one of these spellings


def _spelt(shape: Any, pick: Spell) -> str:
    """A spelling of `shape` (dicts as pair lists, lists, None for a scalar slot): each scalar and
    each separator picked (`pick(choices)`), so documents share a shape but not their spelling."""
    def joined(items: list[str]) -> str:
        return "".join(item if i == 0 else pick(_SEPARATORS[","]) + item for i, item in enumerate(items))

    if isinstance(shape, list) and shape and isinstance(shape[0], tuple):
        pairs = [f'"{key}"{pick(_SEPARATORS[":"])}{_spelt(value, pick)}' for key, value in shape]
        return "{" + joined(pairs) + "}"
    if isinstance(shape, list):
        return "[" + joined([_spelt(item, pick) for item in shape]) + "]"
    return pick(_SCALARS)


_keys = st.sampled_from(["a", "b", "a, b", "k: v", "é", "", "a-b", "x.y", "$", "a\\u0062", "1"])
_shapes = st.recursive(
    st.none(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_keys, inner), min_size=1, max_size=4),  # keys may repeat
    ),
    max_leaves=8,
)


@st.composite
def _batches(draw: Any) -> tuple[str, list[str]]:
    """A template's source document and 20 others, each of the batch's shape (3 in 4) or of another.

    The shapes are Hypothesis's; which shape each document takes, and its spelling (about 500
    scalars and separators a batch), one seeded Random it draws picks: drawn one by one, they were
    most of these tests' CPU."""
    shape = draw(_shapes)
    source = draw(st.sampled_from(["", " "]))  # the template's source document, MySQL's spelling or compact
    template_source = _spelt(shape, lambda choices: '"s"' if choices is _SCALARS else choices[0] + source)
    rng = draw(st.randoms(use_true_random=False))
    others = [_spelt(shape if rng.random() < 0.75 else draw(_shapes), rng.choice) for _ in range(20)]
    return template_source, others


def _json_text_of_every(texts: list[str | None]) -> tuple[list[Any], dict[str, int]]:
    nulled = NulledValues()
    return column_array(texts, COLUMN, json_text, nulled).to_pylist(), nulled.counts


@pytest.fixture
def learning(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every batch learns a template (not only those with many unproven documents)."""
    monkeypatch.setattr(fastjson, "_LEARN_FROM", 1)
    monkeypatch.setattr(fastjson, "_templates", {})
    yield


@settings(max_examples=300, deadline=None)
@given(_batches())
def test_a_document_matching_a_template_is_json_text_once_compacted(batch: tuple[str, list[str]]) -> None:
    source, others = batch
    pattern = fastjson._template_of(source)
    if pattern is None:
        return
    matched = pc.match_substring_regex(pa.array(others, pa.string()), pattern=pattern).to_pylist()
    for text, match in zip(others, matched, strict=True):
        if match:
            assert json_text(text) == text.replace(", ", ",").replace(": ", ":"), (pattern, text)


# The templates learnt by one example stay for the next ones: any template is sound for any document.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_batches())
def test_json_column_with_templates_is_json_text(learning: None, batch: tuple[str, list[str]]) -> None:
    source, others = batch
    texts: list[str | None] = [source, *others, None]
    nulled = NulledValues()
    fast = fastjson.json_column(pa.array(texts, pa.string()), COLUMN, nulled).to_pylist()
    assert (fast, nulled.counts) == _json_text_of_every(texts)


def test_the_bench_documents_are_proven_by_one_template(learning: None) -> None:
    texts = [f'{{"sku": "S{i}", "qty": {i}, "price": {i / 4:.2f}, "tags": ["a", "b"]}}' for i in range(100)]
    exact = fastjson._templated(pa.array(texts), pa.array([True] * 100), "doc")
    assert exact.all()
    (pattern,) = fastjson._templates["doc"]
    assert re.search(r'"sku": \?', pattern)


@pytest.mark.parametrize("document", [
    '{"a": 1, "a": 2}', '{"a": "x, y"}', '{"a" : 1}', '{"a": 1 }', '{"a":\t1}', '[1, 2,]', '{"a": 01}',
    '{"a": "\\u0041"}', '{"a": 1e2}', '{"a": -0}', '{"a": NaN}', '[1]\n', '{"a": [1, {"b": 2}]}',
])
def test_what_no_template_proves_is_decided_by_json_text(learning: None, document: str) -> None:
    texts: list[str | None] = [document] * 20
    nulled = NulledValues()
    assert (fastjson.json_column(pa.array(texts, pa.string()), COLUMN, nulled).to_pylist(),
            nulled.counts) == _json_text_of_every(texts)


_number_texts = st.one_of(
    st.sampled_from(_NUMBERS),
    st.from_regex(r"-?[0-9]{1,17}(\.[0-9]{1,17})?", fullmatch=True),
    st.from_regex(r"-?0\.0{0,8}[0-9]{0,10}", fullmatch=True),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


@settings(max_examples=2000, deadline=None)
@given(_number_texts)
def test_a_plain_number_is_written_as_written(number: str) -> None:
    if re.fullmatch(fastjson._PLAIN_NUMBER, number):
        assert json_text(number) == number
        assert not re.search(fastjson._RISKY_JSON, number)


def test_a_template_never_proves_a_document_deeper_than_its_limit() -> None:
    depth = fastjson._TEMPLATE_MAX_DEPTH + 2
    assert fastjson._template_of('{"a": ' * depth + "1" + "}" * depth) is None
    assert fastjson._template_of('{"a": ' * 4 + "1" + "}" * 4) is not None
