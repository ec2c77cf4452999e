"""Data-quality rules on the in-memory source and sink: each rule passing, warning and failing;
what every run measures; nothing committed when a `fail` rule is violated."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tests.unit.stubs import T0, Rig, order, request
from worker.errors import DataQualityError
from worker.messages import EtlRunRequest, QualityRule
from worker.quality import Measures


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def with_rules(*rules: dict[str, Any], load_type: str = "catalog") -> EtlRunRequest:
    return request(load_type, quality_rules=list(rules))


def run(rig: Rig, req: EtlRunRequest, run_id: str = "run-1") -> Any:
    return rig.runner().run(req, run_id, rig.events(run_id)).entry


def test_every_run_measures_nulls_rows_and_the_cursor_range(rig: Rig) -> None:
    rig.orders.rows[2]["name"] = None
    rig.orders.rows[5]["name"] = None
    entry = run(rig, request("transactional"))
    assert entry.quality["rows"] == 10 and entry.quality["null_counts"] == {"name": 2}
    assert entry.quality["cursor_min"] == (T0 + timedelta(minutes=1)).isoformat(timespec="microseconds")
    assert entry.quality["cursor_max"] == (T0 + timedelta(minutes=10)).isoformat(timespec="microseconds")
    assert entry.quality["violations"] == []
    completed = rig.of("run-1")[-1]
    assert completed.quality == dict(entry.quality)  # reported as recorded


CASES = [  # (rule, table change, passes?)
    ({"rule": "min_rows", "value": 10}, None, True),
    ({"rule": "min_rows", "value": 11}, None, False),
    ({"rule": "max_null_fraction", "column": "name", "value": 0.2}, "two NULL names", True),
    ({"rule": "max_null_fraction", "column": "name", "value": 0.1}, "two NULL names", False),
    ({"rule": "unique", "columns": ["id"]}, None, True),
    ({"rule": "unique", "columns": ["id"]}, "a duplicate id", False),
    ({"rule": "unique", "columns": ["id", "name"]}, "a duplicate id", True),
]


def change(rig: Rig, what: str | None) -> None:
    if what == "two NULL names":
        rig.orders.rows[0]["name"] = rig.orders.rows[1]["name"] = None
    elif what == "a duplicate id":
        rig.orders.rows.append({**order(3), "name": "again"})


@pytest.mark.parametrize(("rule", "what", "passes"), CASES)
@pytest.mark.parametrize("on_violation", ["warn", "fail"])
def test_each_rule_passes_warns_or_fails(rig: Rig, rule: dict[str, Any], what: str | None, passes: bool,
                                         on_violation: str) -> None:
    change(rig, what)
    req = with_rules({**rule, "on_violation": on_violation})
    if not passes and on_violation == "fail":
        with pytest.raises(DataQualityError) as raised:
            run(rig, req)
        assert rule["rule"] in str(raised.value) and "allowed" in str(raised.value)
        assert rig.sink.ledger == [] and rig.sink.tables["bq_orders"] == []  # nothing committed
        return
    entry = run(rig, req)
    assert len(rig.sink.ledger) == 1  # committed
    violations = entry.quality["violations"]
    if passes:
        assert violations == [] and entry.warnings == ()
    else:
        (violation,) = violations
        assert violation["rule"] == rule["rule"] and violation["on_violation"] == "warn"
        assert any(rule["rule"] in warning for warning in entry.warnings)


def test_a_row_count_change_is_measured_against_the_previous_committed_run(rig: Rig) -> None:
    rule = {"rule": "max_row_count_change", "value": 0.5}
    run(rig, with_rules(rule), "run-1")  # nothing to compare with: passes
    del rig.orders.rows[4:]  # 10 → 4 rows: a 60 % drop
    with pytest.raises(DataQualityError, match=r"max_row_count_change: measured 0.6, allowed 0.5"):
        run(rig, with_rules(rule), "run-2")
    entry = run(rig, with_rules({**rule, "value": 0.6}), "run-3")
    assert entry.quality["violations"] == []


def test_freshness_looks_at_the_newest_cursor_value_committed_so_far(rig: Rig) -> None:
    rule = {"rule": "max_cursor_age_seconds", "value": 3600 * 24}
    # The newest row is T0 + 10 min; the source's clock is T0 + 1 day: 23 h 50 min old
    run(rig, with_rules(rule, load_type="transactional"), "run-1")
    # An empty window an hour later: the newest value committed is now older than a day
    rig.clock.now += timedelta(hours=1)
    with pytest.raises(DataQualityError, match="max_cursor_age_seconds"):
        run(rig, with_rules(rule, load_type="transactional"), "run-2")
    # A fresh row makes it pass again
    rig.orders.rows.append(order(11, minutes=60 * 25 - 1))
    assert run(rig, with_rules(rule, load_type="transactional"), "run-3").quality["violations"] == []


def test_rules_are_validated_with_the_request() -> None:
    with pytest.raises(ValueError, match="needs a column"):
        QualityRule.model_validate({"rule": "max_null_fraction", "value": 0.1})
    with pytest.raises(ValueError, match="needs columns"):
        QualityRule.model_validate({"rule": "unique"})
    with pytest.raises(ValueError, match="takes no column"):
        QualityRule.model_validate({"rule": "min_rows", "value": 1, "column": "x"})
    with pytest.raises(ValueError, match="timestamp_column"):
        with_rules({"rule": "max_cursor_age_seconds", "value": 60})
    with pytest.raises(ValueError, match="quality rule max_null_fraction 'email'"):
        request(selected_columns=["id"], quality_rules=[
            {"rule": "max_null_fraction", "column": "email", "value": 0.1}])


def test_null_counts_are_bounded_in_the_report() -> None:
    measures = Measures()
    batch = pa.RecordBatch.from_pydict({f"c{i:04d}": pa.array([None], type=pa.int64()) for i in range(600)})
    measures.add(batch)
    report = measures.report()
    assert len(report["null_counts"]) == 500 and report["null_counts_truncated"] is True
