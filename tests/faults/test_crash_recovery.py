"""Fault injection: kill the worker (SIGKILL) in the middle of a run, start a fresh one, let Pub/Sub
redeliver, and judge the outcome only once the FRESH worker has received the redelivered request
(its delivery attempt, in its own log, is later than the killed one's) and acked it:

- the destination equals the source, row by row;
- the ledger holds one row for the run, written by the delivery expected: the killed one when its
  commit ran on BigQuery before or after it died, the fresh one otherwise;
- Django's view ends with run.completed only, all of them one event (one `event_id`), one of them
  published by the fresh worker after the kill, rebuilt from that ledger row.

Kills land at the named phases (`worker.faults.PHASES`), at a commit job still executing on the
emulator when the worker dies (held open past the redelivery, then completing or failing), and at
seeded random moments between the phases: set ETL_FAULT_SEED to replay other draws (the drawn
moments are in the test ids and printed).

The killed worker's lease is handed back at once (`hand_back_leases`) except in the LEASE_EXPIRY
scenarios, which wait for it to expire as production does. Before the fresh worker subscribes, the
emulator is made to drop the killed worker's stream
(`end_dead_streams`): left alone, it takes about half of the redeliveries and holds each one for an
ack deadline. Each scenario has its own run id, so its jobs can be found by id.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import bigquery

from tests.e2e.sources import SeededSource, normalise
from tests.e2e.stack import Stack, bq_rows
from tests.faults.harness import (
    COMMITTED_BY_THE_KILLED,
    CommitHold,
    Handled,
    Published,
    WorkerProcess,
    kill_then_redeliver,
    ledger,
    release_once_redelivered,
)
from worker.faults import CATEGORIES, HELD_COMMIT_ERROR, PHASES

SEED = int(os.environ.get("ETL_FAULT_SEED", "20261201"))
ROWS = 250
# How many moments of each category every run of these scenarios reaches (250 rows in batches of
# 100 and parts of 150: 3 batches, 2 parts); the random kills draw from 1..n, and
# test_every_run_reaches_the_moments_the_random_kills_draw_from keeps these numbers true.
MOMENTS: dict[str, dict[str, int]] = {
    "job-wait": {"catalog": 8, "transactional": 8},
    "ledger-read": {"catalog": 8, "transactional": 10},  # ledger reads no longer create the ledger
    "staging-drop": {"catalog": 2, "transactional": 2},
    "publish": {"catalog": 18, "transactional": 18},
    "any": {"catalog": 58, "transactional": 62},
}
RANDOM_KILLS = ("job-wait", "ledger-read", "staging-drop", "publish", "any", "any")


@dataclass(frozen=True)
class Draw:
    category: str
    number: int
    dialect: str
    load_type: str

    def __str__(self) -> str:
        return f"{self.category}:{self.number}-{self.dialect}-{self.load_type}"


def draws(seed: int) -> list[Draw]:
    """One kill per entry of RANDOM_KILLS, at a moment drawn from the seed; sources and load types
    take turns so that every pair is drawn."""
    rng = random.Random(seed)
    pairs = itertools.cycle([("postgresql", "catalog"), ("mysql", "transactional"),
                             ("mysql", "catalog"), ("postgresql", "transactional")])
    return [Draw(category, rng.randint(1, MOMENTS[category][load_type]), dialect, load_type)
            for category, (dialect, load_type) in zip(RANDOM_KILLS, pairs, strict=False)]


@dataclass(frozen=True)
class Recovery:
    run_id: str
    killed_at: float  # time.time() once the killed worker was seen dead
    died_at: str  # the worker's last words: where fault injection killed it
    killed_attempt: int
    fresh: Handled
    entry: dict[str, Any]  # the run's one ledger row
    completed: list[Published]
    trace: list[str]  # the killed worker's moments, up to its death


def crash_and_recover(
    stack: Stack, source: SeededSource, load_type: str, faults: dict[str, str],
    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
    while_redelivered: Callable[[WorkerProcess, str], None] | None = None, wait_for_lease: bool = False,
    **request_fields: Any,
) -> Recovery:
    """Kill a worker as `faults` says, recover with a fresh one, check exactly-once; the outcome."""
    number = uuid.uuid4().int % 10**12
    run_id = f"etl-run-{number}"
    body = source.request(load_type, etl_run_id=number, **request_fields)
    takeover = kill_then_redeliver(stack, body, run_id, faults, workers, tmp_path, while_redelivered,
                                   wait_for_lease)
    context = takeover.context
    # Then its run.completed has arrived
    completed = takeover.events.wait_completed_after(run_id, takeover.killed_at)
    # And the destination equals the source, exactly once
    dataset = stack.settings.bigquery_dataset
    assert [normalise(r) for r in bq_rows(bq_client, dataset, "orders", "id")] == source.rows(), context
    entries = ledger(bq_client, dataset, run_id)
    assert len(entries) == 1, (context, entries)
    # And Django's view ends with one run.completed (duplicates are the very same event)
    assert {p.event["event_type"] for p in completed} == {"run.completed"}, (context, completed)
    assert len({p.event["event_id"] for p in completed}) == 1, (context, completed)
    last = completed[-1].event
    assert (last["rows_loaded"], last["source_row_count"]) == (ROWS, ROWS), (context, last)
    assert last["attempt"] == entries[0]["attempt"], (context, last, entries)
    return Recovery(run_id, takeover.killed_at, takeover.died_at, takeover.killed_attempt, takeover.fresh,
                    entries[0], completed, takeover.moments)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_a_worker_killed_at_any_phase_loses_and_duplicates_nothing(
    phase: str, load_type: str, crash_stack: Stack, orders_source: SeededSource,
    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    killed_at_phase(phase, load_type, crash_stack, orders_source, workers, bq_client, tmp_path, request,
                    wait_for_lease=(load_type, phase) in LEASE_EXPIRY)


# Scenarios whose killed lease is left to expire (one ack deadline) as in production; the others
# hand it back at once (`hand_back_leases`: the same redelivery, attempt + 1, ten seconds sooner).
LEASE_EXPIRY = {("catalog", "extraction_started"), ("transactional", "after_completed")}


# merge (with reconcile_deletes: a keys table is staged too) at every phase, the sources taking turns
MERGE_SCENARIOS = [pytest.param(phase, "postgresql" if n % 2 == 0 else "mysql", id=f"{phase}-merge")
                   for n, phase in enumerate(PHASES)]


@pytest.mark.parametrize(("phase", "orders_source"), MERGE_SCENARIOS, indirect=["orders_source"])
def test_a_merge_worker_killed_at_any_phase_loses_and_duplicates_nothing(
    phase: str, crash_stack: Stack, orders_source: SeededSource, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    killed_at_phase(phase, "merge", crash_stack, orders_source, workers, bq_client, tmp_path, request,
                    reconcile_deletes=True)


def killed_at_phase(phase: str, load_type: str, crash_stack: Stack, orders_source: SeededSource,
                    workers: list[WorkerProcess], bq_client: bigquery.Client, tmp_path: Path,
                    request: pytest.FixtureRequest, wait_for_lease: bool = False,
                    **request_fields: Any) -> None:
    """Kill at a named phase, recover, and check which delivery's commit is in force."""
    faults = {"ETL_CRASH_AT": phase}
    redelivered = None
    if phase == "commit_submitted":  # the commit job goes on running until the redelivery arrived
        hold: CommitHold = request.getfixturevalue("commit_hold")
        faults["ETL_COMMIT_HOLD_DIR"] = str(hold.directory)
        redelivered = release_once_redelivered(hold, fail=False)
    recovery = crash_and_recover(crash_stack, orders_source, load_type, faults, workers, bq_client,
                                 tmp_path, redelivered, wait_for_lease, **request_fields)
    assert recovery.died_at.startswith(phase)
    # Then the commit in force is the killed delivery's when it had reached BigQuery, else the fresh one's
    committer = recovery.killed_attempt if phase in COMMITTED_BY_THE_KILLED else recovery.fresh.attempt
    assert recovery.entry["attempt"] == committer, recovery
    if phase == "after_completed":  # the killed worker's run.completed and the fresh one's: one event
        assert any(p.publish_time < recovery.killed_at for p in recovery.completed), recovery
    if phase == "commit_submitted":
        job = held_commit_job(bq_client, recovery)
        assert job.error_result is None and recovery.entry["staging_token"] in job.job_id, job.error_result


@pytest.mark.parametrize(("orders_source", "load_type"),
                         [("postgresql", "catalog"), ("mysql", "transactional")], indirect=["orders_source"])
def test_a_commit_still_running_when_its_worker_dies_and_then_failing_is_applied_once_by_the_redelivery(
    load_type: str, crash_stack: Stack, orders_source: SeededSource, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path, commit_hold: CommitHold,
) -> None:
    # Given a worker killed while its commit job executes; the job fails once the redelivery is in
    faults = {"ETL_CRASH_AT": "commit_submitted", "ETL_COMMIT_HOLD_DIR": str(commit_hold.directory)}
    recovery = crash_and_recover(crash_stack, orders_source, load_type, faults, workers, bq_client,
                                 tmp_path, release_once_redelivered(commit_hold, fail=True))
    # Then the killed delivery's commit failed after its worker died, and the fresh delivery's applied
    job = held_commit_job(bq_client, recovery)
    assert job.error_result is not None and HELD_COMMIT_ERROR in job.error_result["message"], job.error_result
    assert recovery.entry["attempt"] == recovery.fresh.attempt, recovery


@pytest.mark.parametrize(("draw", "orders_source"),
                         [pytest.param(d, d.dialect, id=str(d)) for d in draws(SEED)],
                         indirect=["orders_source"])
def test_a_worker_killed_at_a_random_moment_loses_and_duplicates_nothing(
    draw: Draw, crash_stack: Stack, orders_source: SeededSource, workers: list[WorkerProcess],
    bq_client: bigquery.Client, tmp_path: Path,
) -> None:
    print(f"ETL_FAULT_SEED={SEED}: killing at moment {draw.category}:{draw.number} ({draw})")
    faults = {"ETL_KILL_AT": f"{draw.category}:{draw.number}"}
    recovery = crash_and_recover(crash_stack, orders_source, draw.load_type, faults, workers, bq_client,
                                 tmp_path)
    print(f"died at {recovery.died_at}")
    assert recovery.died_at.startswith(f"moment {draw.category}:{draw.number} ")
    # Then the commit in force is the killed delivery's exactly when its commit job had answered
    answered = any(re.search(r" insert etl_\S+_commit answered", m) for m in recovery.trace)
    committer = recovery.killed_attempt if answered else recovery.fresh.attempt
    assert recovery.entry["attempt"] == committer, recovery


@pytest.mark.parametrize("orders_source", ["postgresql"], indirect=True)
@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_every_run_reaches_the_moments_the_random_kills_draw_from(
    load_type: str, crash_stack: Stack, orders_source: SeededSource, workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    trace = tmp_path / "moments.txt"
    worker = WorkerProcess({**crash_stack.env, "ETL_FAULT_INJECTION": "1", "ETL_FAULT_TRACE": str(trace)},
                           tmp_path / "worker.log")
    workers.append(worker)
    message_id = crash_stack.publish(orders_source.request(load_type, etl_run_id=950))
    worker.wait_handled("etl-run-950", message_id)
    reached = Counter(line.split("#")[0] for line in trace.read_text().splitlines())
    reached["any"] = sum(reached.values())
    assert set(reached) <= {*CATEGORIES, "bq"}, reached
    assert all(reached[c] >= MOMENTS[c][load_type] for c in CATEGORIES), (reached, MOMENTS)


def held_commit_job(client: bigquery.Client, recovery: Recovery) -> Any:
    """The killed delivery's commit job, as the emulator finished it after the worker had died."""
    inserted = [m for m in recovery.trace if " insert etl_" in m and m.endswith("_commit before")]
    assert len(inserted) == 1, recovery.trace
    job = client.get_job(inserted[0].split(" insert ")[1].split()[0])
    assert job.state == "DONE" and job.ended.timestamp() > recovery.killed_at, (job.state, job.ended)
    return job
