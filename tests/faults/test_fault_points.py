"""worker/faults.py as pure logic: inert without ETL_FAULT_INJECTION=1, and what each moment is.

(The kills themselves are exercised by test_crash_recovery.py against the real services.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from worker import faults

COMMIT = (
    "DECLARE staged_rows INT64 DEFAULT 1;\nBEGIN TRANSACTION;\n"
    "  INSERT INTO d SELECT 1;\n  COMMIT TRANSACTION;\nEND IF;"
)
BQ = "http://bq/bigquery/v2/projects/p"
VARIABLES = ("ETL_FAULT_INJECTION", "ETL_CRASH_AT", "ETL_KILL_AT", "ETL_FAULT_TRACE", "ETL_COMMIT_HOLD_DIR",
             "ETL_FAULT_ACK_FILE")


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((method, url))
        return type("Response", (), {"status_code": 200})()


class FakeClient:
    def __init__(self) -> None:
        self._http = FakeSession()


class FakePublisher:
    def publish(self, topic: str, data: bytes, **attributes: str) -> Any:
        raise AssertionError("not called here")


def job(job_id: str, query: str) -> str:
    return json.dumps({"jobReference": {"jobId": job_id}, "configuration": {"query": {"query": query}}})


@pytest.fixture(autouse=True)
def _no_fault_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(faults, "_moments", None)


@pytest.mark.parametrize("env", [{}, {"ETL_CRASH_AT": "commit_submitted", "ETL_KILL_AT": "any:1"}])
def test_without_fault_injection_nothing_is_changed(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    for name, value in {**env, "ETL_FAULT_ACK_FILE": str(tmp_path / "acks")}.items():  # even when set
        monkeypatch.setenv(name, value)
    client, publisher = FakeClient(), FakePublisher()
    assert faults.hold_commit(COMMIT) is COMMIT
    assert faults.instrument_bigquery(client) is client and "request" not in vars(client._http)
    assert faults.instrument_publisher(publisher) is publisher and "publish" not in vars(publisher)
    for phase in faults.PHASES:
        faults.crash_point(phase)  # returns: still alive
    faults.note_delivery("ack-1")
    assert not (tmp_path / "acks").exists()


def test_each_delivery_ack_id_is_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_FAULT_ACK_FILE", str(tmp_path / "acks"))
    faults.note_delivery("ack-1")
    faults.note_delivery("ack-2")
    assert (tmp_path / "acks").read_text().split() == ["ack-1", "ack-2"]


def test_the_held_commit_waits_just_before_its_commit_and_can_be_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_CRASH_AT", "commit_submitted")
    monkeypatch.setenv("ETL_COMMIT_HOLD_DIR", str(tmp_path))
    (tmp_path / faults.HOLD_FIFO).touch()  # a plain file: the killer's open returns at once
    died: list[str] = []
    monkeypatch.setattr(faults, "_die", died.append)
    before, after = faults.hold_commit(COMMIT).split("COMMIT TRANSACTION;")
    fail = f"SELECT ERROR('{faults.HELD_COMMIT_ERROR}') FROM read_text('{tmp_path / faults.HOLD_FAIL}');\n"
    assert before.endswith(fail) and "INSERT INTO d" in before
    assert f"read_text('{tmp_path / faults.HOLD_FIFO}')" in before
    assert after == "\nEND IF;"
    deadline = time.monotonic() + 10
    while not died and time.monotonic() < deadline:
        time.sleep(0.01)
    assert died and died[0].startswith("commit_submitted")


def test_every_bigquery_request_is_two_moments_of_its_category(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_FAULT_TRACE", str(tmp_path / "trace"))
    client = faults.instrument_bigquery(FakeClient())
    ledger = job("q1", "SELECT * FROM `p`.`d`.`_etl_ledger` WHERE run_id = @run_id")
    client._http.request("POST", f"{BQ}/datasets")
    client._http.request("POST", f"{BQ}/jobs", data=ledger)
    client._http.request("GET", f"{BQ}/queries/q1?timeoutMs=1")
    client._http.request("PUT", "http://bq/upload/bigquery/v2/projects/p/jobs?upload_id=1", data=b"PAR1")
    client._http.request("POST", f"{BQ}/jobs", data=job("etl_r_a1_t_commit", COMMIT))
    client._http.request("GET", f"{BQ}/queries/etl_r_a1_t_commit")
    client._http.request("DELETE", f"{BQ}/datasets/d/tables/_etl_staging_r_a1_t")
    categories = [line.split("#")[0] for line in (tmp_path / "trace").read_text().splitlines()]
    kinds = ("bq", "ledger-read", "ledger-read", "job-wait", "job-wait", "job-wait", "staging-drop")
    assert categories == [kind for kind in kinds for _ in ("before", "answered")]
    assert len(client._http.sent) == 7


def test_the_kill_lands_on_the_nth_moment_of_its_category(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_KILL_AT", "staging-drop:2")
    died: list[str] = []
    monkeypatch.setattr(faults, "_die", died.append)
    client = faults.instrument_bigquery(FakeClient())
    client._http.request("POST", f"{BQ}/datasets")
    client._http.request("DELETE", f"{BQ}/datasets/d/tables/_etl_staging_x")
    assert died == ["moment staging-drop:2 (DELETE table _etl_staging_x answered 200)"]


@pytest.mark.parametrize("kill_at", ["nowhere:1", "publish:0", "publish"])
def test_a_kill_at_an_unknown_category_or_number_is_refused(
    kill_at: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_KILL_AT", kill_at)
    with pytest.raises(ValueError, match="ETL_KILL_AT"):
        faults.instrument_bigquery(FakeClient())
