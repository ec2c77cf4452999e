"""Crash points: inert by default; with ETL_CRASH_OCCURRENCE, the kill comes at the phase's N-th
passage (a job passes a table's points once per table), not before."""

from __future__ import annotations

import os
import signal

import pytest

from worker import faults


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    killed: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(faults, "_passages", {})
    return killed


def test_a_crash_point_is_inert_without_fault_injection(kills: list[int], monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.delenv("ETL_FAULT_INJECTION", raising=False)
    monkeypatch.setenv("ETL_CRASH_AT", "table_staged")
    faults.crash_point("table_staged")
    assert kills == []


@pytest.mark.parametrize(("occurrence", "passages_before_the_kill"), [(None, 1), ("3", 3)])
def test_the_kill_comes_at_the_chosen_passage_of_its_phase(
    kills: list[int], monkeypatch: pytest.MonkeyPatch, occurrence: str | None, passages_before_the_kill: int
) -> None:
    monkeypatch.setenv("ETL_FAULT_INJECTION", "1")
    monkeypatch.setenv("ETL_CRASH_AT", "table_staged")
    if occurrence is None:
        monkeypatch.delenv("ETL_CRASH_OCCURRENCE", raising=False)
    else:
        monkeypatch.setenv("ETL_CRASH_OCCURRENCE", occurrence)
    for passage in range(1, 5):
        faults.crash_point("before_commit")  # another phase never counts
        faults.crash_point("table_staged")
        if passage < passages_before_the_kill:
            assert kills == [], passage
    assert kills[0] == signal.SIGKILL and os.environ["ETL_CRASH_AT"] == "table_staged"
    assert "table_staged" in faults.JOB_PHASES and "table_staged" not in faults.PHASES
