"""Fault injection: kill the worker (SIGKILL) at every phase of a run, start a fresh one, let Pub/Sub
redeliver, and check that the destination equals the source exactly, that the ledger holds one row
for the run, and that Django's view ends with exactly one run.completed (duplicates share its id).

Each scenario has its own topics and subscription (the emulator misroutes after killed streams).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import bigquery

from devstack.emulators import Emulator, stop_process
from tests.conftest import PROJECT
from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_rows, settings_env
from worker.faults import PHASES
from worker.settings import Settings

KILL_WAIT_S = 60.0
REDELIVERY_WAIT_S = 300.0


@pytest.fixture
def crash_stack(pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str) -> Stack:
    env = settings_env(
        pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
        ETL_BATCH_SIZE=100, ETL_PART_ROWS=150,  # 250 rows: 3 batches, 2 parts
        ETL_MAX_DELIVERY_ATTEMPTS=20,  # kills use up attempts; recovery must not dead-letter
    )
    return Stack(Settings(**env), env)


class WorkerProcess:
    """`python -m worker serve` as a separate process, the way Cloud Run runs it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--no-json-logs", "serve"],
            env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_killed(self) -> int:
        try:
            return self.process.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
            raise AssertionError(f"the worker never reached its crash point; see {self.log_path}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop_process(self.process)
        self._log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def ledger_rows(client: bigquery.Client, dataset: str, run_id: str) -> int:
    query = f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}._etl_ledger` WHERE run_id = '{run_id}'"
    return int(next(iter(client.query(query).result()))["n"])


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_a_worker_killed_at_any_phase_loses_and_duplicates_nothing(
    phase: str, load_type: str, crash_stack: Stack, orders_source: SeededSource,
    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
) -> None:
    stack, run_id = crash_stack, "etl-run-900"
    log_path = tmp_path / "workers.log"
    # Given a worker that will die at `phase`
    doomed = WorkerProcess({**stack.env, "ETL_FAULT_INJECTION": "1", "ETL_CRASH_AT": phase}, log_path)
    workers.append(doomed)
    stack.publish(orders_source.request(load_type, etl_run_id=900))
    # When it is killed there and a fresh worker takes over the redelivered request
    assert doomed.wait_killed() == -signal.SIGKILL
    workers.append(WorkerProcess(stack.env, log_path))
    # (the emulator sometimes routes a redelivery to the dead stream first: allow minutes)
    terminal = stack.wait_terminal(run_id, timeout_s=REDELIVERY_WAIT_S)
    time.sleep(1.0)  # let a late duplicate, if any, arrive before counting
    terminal = stack.terminal_events(run_id)
    # Then the destination equals the source, exactly once
    dataset = stack.settings.bigquery_dataset
    assert [normalise(r) for r in bq_rows(bq_client, dataset, "orders", "id")] == orders_source.rows()
    assert ledger_rows(bq_client, dataset, run_id) == 1
    # And Django's view ends with one run.completed (duplicates are the very same event)
    assert {e["event_type"] for e in terminal} == {"run.completed"}, terminal
    assert len({e["event_id"] for e in terminal}) == 1
    assert terminal[-1]["rows_loaded"] == 250 and terminal[-1]["source_row_count"] == 250
