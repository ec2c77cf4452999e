"""Data-quality rules against real sources and the BigQuery emulator: uniqueness counted on the
staging table by BigQuery, NULL fractions measured on the streamed batches, a failing rule that
commits nothing, a warning that commits and says so."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.e2e.oneshot import RunOnce, run_once
from tests.e2e.sources import SeededSource, orders_table

__all__ = ["run_once"]


def rules(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return list(items)


def test_rules_warn_fail_and_pass_on_a_real_table(
    orders_source: SeededSource, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str
) -> None:
    # Given 250 orders whose note is NULL in a third of them and whose customers repeat
    passing = rules({"rule": "min_rows", "value": 250}, {"rule": "unique", "columns": ["id"]},
                    {"rule": "max_null_fraction", "column": "note", "value": 0.34})
    # When the rules hold, the run commits and reports what it measured
    completed = run_once(orders_source.request("catalog", quality_rules=passing), "run-q1")[-1]
    assert completed.event_type == "run.completed" and completed.quality is not None
    assert completed.quality["violations"] == []
    assert completed.quality["null_counts"]["note"] == 84  # ids ≡ 1 (mod 3)

    # When a rule set to warn is broken, the run commits and says so
    warned = run_once(orders_source.request(
        "catalog", quality_rules=rules({"rule": "unique", "columns": ["customer"], "on_violation": "warn"})),
        "run-q2")[-1]
    assert warned.event_type == "run.completed" and warned.quality is not None
    (violation,) = warned.quality["violations"]
    customers = [row[1] for row in orders_source.rows()]
    assert violation["rule"] == "unique" and violation["measured"] == len(customers) - len(set(customers))
    assert violation["measured"] == 183  # 17 repeating customers and 50 unique ones among 250 rows
    assert any("unique on column 'customer'" in w for w in warned.warnings)

    # When a rule set to fail is broken, nothing is committed and the failure names the rule
    with orders_source.engine.begin() as conn:
        conn.execute(sa.update(orders_table(orders_source.schema)).values(note=None))
    failed = run_once(orders_source.request("catalog", etl_run_id=3, quality_rules=passing), "run-q3")[-1]
    assert failed.event_type == "run.failed"
    assert failed.error.type == "DataQualityError" and not failed.error.retryable
    message = failed.error.message
    assert "max_null_fraction on column 'note': measured 1.0, allowed 0.34" in message
    ledger = bq_client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.{bq_dataset}._etl_ledger`").result()
    assert next(iter(ledger))["n"] == 2  # the two committed runs only
