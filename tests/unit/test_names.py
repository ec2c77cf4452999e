"""Column names: every source name gets a strict BigQuery name, on its own, the same every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import ColumnNameError
from worker.names import bigquery_name, column_names, is_strict, names_markdown

NAMES_DOC = Path(__file__).resolve().parents[2] / "docs" / "names.md"


@pytest.mark.parametrize(("source", "expected"), [
    ("CustomerID", "CustomerID"),  # already legal: kept exactly (existing tables keep their columns)
    ("order", "order"),  # a reserved word is a legal column name (always quoted)
    ("Unit Price", "unit_price"),
    ("item-code", "item_code"),
    ("OrderDate (UTC)", "order_date_utc"),
    ("größe", "grosse"),
    ("Größe", "grosse"),
    ("café", "cafe"),
    ("Ünïcödé", "unicode"),
    ("ÜberWert", "uber_wert"),
    ("naïve-Straße", "naive_strasse"),
    ("discount %", "discount_pct"),
    ("Prix €", "prix_eur"),
    ("123start", "_123start"),
    ("IPAddress v4", "ip_address_v4"),
    ("  spaced  ", "spaced"),
    ('x"y;--z', "x_y_z"),
    ("_PARTITIONTIME", "partitiontime"),  # reserved prefix: converted
    ("_etl_staging", "etl_staging"),  # the worker's own prefix
    ("имя", "_63565d7f"),  # nothing transliterable: a tag keeps it apart
    ("名前_id", "id_88fbfd9e"),
    ("-", "_3973e022"),
])
def test_the_rule_row_by_row(source: str, expected: str) -> None:
    assert bigquery_name(source) == expected


def test_a_long_name_is_cut_to_300_characters_with_a_tag_that_keeps_it_apart() -> None:
    first, second = "Ä" + "x" * 400, "Ä" + "x" * 399 + "y"
    assert len(bigquery_name(first)) == len(bigquery_name(second)) == 300
    assert bigquery_name(first) != bigquery_name(second)


@given(st.text(min_size=1, max_size=400))
def test_every_name_maps_to_a_strict_bigquery_name(source: str) -> None:
    assert is_strict(bigquery_name(source))


@given(st.text(min_size=1, max_size=60), st.lists(st.text(min_size=1, max_size=20), max_size=5))
def test_a_name_maps_the_same_whatever_the_other_columns(source: str, others: list[str]) -> None:
    try:
        mapping = column_names([*others, source])
    except ColumnNameError:
        return  # a collision is refused, never resolved by moving a name
    assert mapping[source] == bigquery_name(source)


@pytest.mark.parametrize(("first", "second"), [("Order", "order"), ("Unit Price", "unit_price"),
                                                ("a-b", "a b")])
def test_two_columns_on_one_bigquery_name_are_refused_naming_both(first: str, second: str) -> None:
    with pytest.raises(ColumnNameError) as raised:
        column_names([first, "id", second])
    message = str(raised.value)
    assert repr(first) in message and repr(second) in message and "column_names" in message
    assert not raised.value.retryable


def test_an_override_settles_a_collision_and_must_be_a_legal_name() -> None:
    assert column_names(["Order", "order"], {"order": "order_lower"}) == {
        "Order": "Order", "order": "order_lower"}
    with pytest.raises(ColumnNameError, match="not a BigQuery column name"):
        column_names(["a"], {"a": "has space"})
    with pytest.raises(ColumnNameError, match="'a' and 'b'"):
        column_names(["a", "b"], {"b": "A"})


def test_docs_names_md_is_current() -> None:
    assert NAMES_DOC.read_text(encoding="utf-8") == names_markdown(), (
        "docs/names.md is stale: .venv/bin/python -c 'import worker.names as n; "
        "open(\"docs/names.md\", \"w\").write(n.names_markdown())'")
