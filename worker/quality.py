"""Data quality: what every run measures on its rows, and the rules a request may set on them.

Measured on the Arrow batches as they stream, never by a second pass over the source: a column's
NULL count is Arrow metadata (free), the cursor's min and max one vectorised `min_max` per batch.
Uniqueness is the exception: proving that a set of columns is unique within the loaded rows needs
every value at once, which a stream of bounded memory does not have; BigQuery counts it on the
staging table instead (`Staging.duplicate_count`), one query before the commit.

A rule's `on_violation` is `warn` (committed; reported in `run.completed`'s `warnings` and
`quality.violations`, and logged) or `fail` (nothing committed: a permanent DataQualityError naming
the rule, the column, the measured and the allowed value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from worker.errors import DataQualityError
from worker.messages import QualityRule
from worker.window import CursorValue, cursor_key, cursor_text

MAX_REPORTED_COLUMNS = 500  # null counts reported in run.completed (bounded: columns with NULLs first)


@dataclass
class Measures:
    """What a run measured on the rows it loaded (BigQuery column names)."""

    rows: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    cursor: str | None = None  # the cursor's BigQuery column, when the run has one
    cursor_min: CursorValue | None = None
    cursor_max: CursorValue | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if column.null_count:
                self.null_counts[name] = self.null_counts.get(name, 0) + column.null_count
        if self.cursor is not None and batch.num_rows:
            bounds = pc.min_max(batch.column(self.cursor)).as_py()
            self.cursor_min = _least(self.cursor_min, bounds["min"])
            self.cursor_max = _greatest(self.cursor_max, bounds["max"])

    def null_fraction(self, column: str) -> float:
        return self.null_counts.get(column, 0) / self.rows if self.rows else 0.0

    def report(self) -> dict[str, Any]:
        """The bounded, JSON-ready form kept in the ledger and sent in run.completed."""
        ranked = sorted(self.null_counts.items(), key=lambda item: (-item[1], item[0]))
        nulls = dict(ranked[:MAX_REPORTED_COLUMNS])
        return {
            "rows": self.rows, "null_counts": nulls,
            "null_counts_truncated": len(self.null_counts) > len(nulls),
            "cursor_min": None if self.cursor_min is None else cursor_text(self.cursor_min),
            "cursor_max": None if self.cursor_max is None else cursor_text(self.cursor_max),
            "cursor_max_key": None if self.cursor_max is None else cursor_key(self.cursor_max),
        }


@dataclass(frozen=True)
class Violation:
    rule: str
    column: str | None
    measured: Any
    allowed: Any
    on_violation: str

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        return (f"quality rule {self.rule}{where}: measured {self.measured}, allowed {self.allowed} "
                f"({self.on_violation})")

    def report(self) -> dict[str, Any]:
        return {"rule": self.rule, "column": self.column, "measured": self.measured,
                "allowed": self.allowed, "on_violation": self.on_violation}


@dataclass(frozen=True)
class Context:
    """What the rules compare against besides the run's own measures."""

    previous_rows: int | None  # rows_loaded of the previous committed run of this table
    previous_cursor_max: CursorValue | None  # the newest cursor value committed before
    now: datetime  # the source's clock in the snapshot (aware, UTC)
    now_local: datetime  # ... as the session's naive wall clock
    duplicates: Mapping[tuple[str, ...], int]  # per `unique` rule's columns: rows beyond the first


def evaluate(rules: Sequence[QualityRule], measures: Measures, context: Context,
             bq_name: Mapping[str, str]) -> list[Violation]:
    """Every violated rule, in the request's order. `bq_name`: source column → BigQuery column."""
    found = []
    for rule in rules:
        violation = _check(rule, measures, context, bq_name)
        if violation is not None:
            found.append(violation)
    return found


def enforce(violations: Sequence[Violation], table: str | None = None) -> list[str]:
    """Raise DataQualityError for the first `fail`; the warnings of the others, to report.
    `table`: named in the error (a table of a job of several)."""
    failing = [v for v in violations if v.on_violation == "fail"]
    if failing:
        where = f"table {table}: " if table else ""
        raise DataQualityError(where + "; ".join(v.describe() for v in failing) + "; nothing was committed")
    return [v.describe() for v in violations]


def _check(rule: QualityRule, measures: Measures, context: Context, bq_name: Mapping[str, str]
           ) -> Violation | None:
    measured = _measure(rule, measures, context, bq_name)
    if _within(rule, measured):
        return None
    column = rule.column or (", ".join(rule.columns) if rule.columns else None)
    return Violation(rule.rule, column, measured, rule.value, rule.on_violation)


def _measure(rule: QualityRule, measures: Measures, context: Context, bq_name: Mapping[str, str]) -> Any:
    """The rule's measured value (None: nothing to measure, e.g. no previous run to compare)."""
    if rule.rule == "min_rows":
        return measures.rows
    if rule.rule == "max_null_fraction":
        assert rule.column is not None  # the model requires it
        return round(measures.null_fraction(bq_name[rule.column]), 6)
    if rule.rule == "unique":
        return context.duplicates[tuple(bq_name[c] for c in rule.columns or ())]
    if rule.rule == "max_row_count_change":
        return _change(measures.rows, context.previous_rows)
    newest = _greatest(measures.cursor_max, context.previous_cursor_max)
    return None if newest is None else round(_age_s(context, newest), 3)


def _within(rule: QualityRule, measured: Any) -> bool:
    if rule.rule == "min_rows":
        return bool(measured >= rule.value)
    if rule.rule == "unique":
        return bool(measured == 0)
    if rule.rule == "max_row_count_change":
        return measured is None or bool(measured <= rule.value)
    # max_null_fraction, max_cursor_age_seconds (no cursor value at all is not fresh)
    return measured is not None and bool(measured <= rule.value)


def previous_cursor_max(report: Mapping[str, Any] | None) -> CursorValue | None:
    """The newest cursor value a committed run reported (its `quality.cursor_max` text)."""
    text = (report or {}).get("cursor_max")
    if not isinstance(text, str):
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return date.fromisoformat(text) if len(text) == len("2024-01-31") else datetime.fromisoformat(text)
    except ValueError:
        return None


def _change(rows: int, previous: int | None) -> float | None:
    """The relative change against the previous run (None: nothing to compare with)."""
    if previous is None:
        return None
    if previous == 0:
        return 0.0 if rows == 0 else float("inf")
    return round(abs(rows - previous) / previous, 6)


def _age_s(context: Context, newest: CursorValue) -> float:
    """Seconds between the source's clock and a cursor value: a zoned value against the UTC clock,
    a naive one against the session's wall clock (as windows compare them), a date against today."""
    if isinstance(newest, datetime):
        now = context.now if newest.tzinfo is not None else context.now_local
        return (now - newest).total_seconds()
    if isinstance(newest, int):
        raise DataQualityError("max_cursor_age_seconds needs a timestamp or date cursor, not an integer")
    return (context.now_local.date() - newest).total_seconds()


def _least(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)
