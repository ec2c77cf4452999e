"""Dead-letter replay end to end: a request whose source is down fails 5 times and is dead-lettered;
the source comes back; `etl-worker replay` sends it again; the rows arrive exactly once; replaying a
duplicate of the committed run changes nothing but publishes the same run.completed again.

How the source is "down, then fixed": the request names a port on 127.0.0.1 where nothing listens
(connection refused: SourceConnectionError, transient, so the request is nacked and the
subscription's dead-letter policy takes over). "Fixing" it starts a TCP relay on that port to the
real PostgreSQL, as when a database (or the network path to it) comes back. Connection parameters
travel in the message body, so the fix has to happen at the address the request already names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery, pubsub_v1

from devstack.emulators import Emulator
from tests import forkserver
from tests.e2e.relay import Relay, pg_relay
from tests.e2e.sources import SeededSource, normalise, seed
from tests.e2e.stack import Stack, bq_count, bq_rows, serving, settings_env, settings_from_env
from worker.commands.topology import dead_letter_subscription

PASSWORD = "Replay-Known-pw:7@x/%"  # trust auth ignores it; it must never be shown
RUN_ID = "etl-run-601"

__all__ = ["pg_relay"]  # the fixture `relay`


def replay_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return forkserver.run([sys.executable, "-m", "worker", "replay", *args],
                          env={**os.environ, **env}, timeout=120)


def wait_dead_letters(stack: Stack, count: int, timeout_s: float = 90.0) -> set[str]:
    """Message ids on the hold subscription (pulled and released again at once)."""
    subscriber = pubsub_v1.SubscriberClient()
    settings = stack.settings
    path = subscriber.subscription_path(settings.gcp_project_id, dead_letter_subscription(settings))
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < count and time.monotonic() < deadline:
        response = subscriber.pull(subscription=path, max_messages=10, timeout=2)
        if response.received_messages:
            seen |= {r.message.message_id for r in response.received_messages}
            subscriber.modify_ack_deadline(subscription=path, ack_deadline_seconds=0,
                                           ack_ids=[r.ack_id for r in response.received_messages])
    subscriber.close()
    assert len(seen) >= count, f"only {len(seen)} dead letters after {timeout_s}s"
    return seen


def completions(stack: Stack) -> list[dict[str, Any]]:
    return [e for e in stack.pull_events() if e["run_id"] == RUN_ID and e["event_type"] == "run.completed"]


def test_dead_lettered_run_is_replayed_once_the_source_is_back(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, pg_admin: sa.Engine,
    pg_schema: str, bq_client: bigquery.Client, relay: Relay,
) -> None:
    env = settings_env(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                       ETL_MAX_DELIVERY_ATTEMPTS=5, ETL_MAX_RETRIES=1, ETL_BATCH_SIZE=100)
    stack = Stack(settings_from_env(env))
    source: SeededSource = seed("postgresql", pg_admin, pg_schema, 250)
    request = source.request("catalog", etl_run_id=601)
    request["connection_params"].update(port=relay.port, password=PASSWORD)

    with serving(stack.settings):
        # Given the same request published twice while its database is unreachable
        stack.publish(request)
        stack.publish(request)
        # When every delivery fails (5 attempts each), both copies are dead-lettered
        stack.wait_for(lambda events: sum(e["event_type"] == "run.failed" for e in events) >= 10)
        assert wait_dead_letters(stack, 2)
        failed = [e for e in stack.events if e["event_type"] == "run.failed"]
        assert {e["error"]["type"] for e in failed} == {"SourceConnectionError"}
        assert all(e["error"]["retryable"] for e in failed)
        assert sorted(e["attempt"] for e in failed) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        # And each run.failed says whether another delivery comes; the last ones say the request
        # is dead-lettered, and a run.dead_lettered event follows each
        assert sorted((e["attempt"], e["will_retry"]) for e in failed) == [
            (n, n < 5) for n in (1, 1, 2, 2, 3, 3, 4, 4, 5, 5)]
        stack.wait_for(lambda events: sum(e["event_type"] == "run.dead_lettered" for e in events) >= 2)
        dead = [e for e in stack.events if e["event_type"] == "run.dead_lettered"]
        assert [(e["attempt"], e["error"]["type"]) for e in dead] == [(5, "SourceConnectionError")] * 2
        assert {e["dead_letter_topic"] for e in dead} == {stack.settings.etl_dead_letter_topic}

        # And the database comes back; the operator replays one copy of the run
        relay.start()
        first = replay_cli(env, "--run-id", RUN_ID, "--limit", "1")
        assert first.returncode == 0, first.stderr
        assert "2 dead-lettered request(s); 1 replayed" in first.stdout, first.stdout
        stack.wait_for(lambda _: len(completions(stack)) >= 1)
        # (and the replay told Django, with a run.replayed of the run)
        stack.wait_for(lambda events: any(e["event_type"] == "run.replayed" for e in events))
        (replayed,) = [e for e in stack.events if e["event_type"] == "run.replayed"]
        assert (replayed["run_id"], replayed["replay_count"], replayed["attempt"]) == (RUN_ID, 1, 5)

        # Then the rows arrive exactly once, and the run kept its id; attempts count on after 5
        assert [normalise(r) for r in bq_rows(bq_client, bq_dataset, "orders", "id")] == source.rows()
        completed = completions(stack)[0]
        assert completed["rows_loaded"] == 250 and completed["attempt"] == 6

        # When the other copy of the already committed run is replayed as well
        second = replay_cli(env, "--all")
        assert second.returncode == 0, second.stderr
        assert "1 dead-lettered request(s); 1 replayed" in second.stdout, second.stdout
        stack.wait_for(lambda _: len(completions(stack)) >= 2)

    # Then nothing changes but the same run.completed is published again
    again = completions(stack)[1]
    assert again["event_id"] == completed["event_id"] and again == completed
    assert bq_count(bq_client, bq_dataset, "orders") == 250
    # And the dead-letter topic is empty; nothing shown or logged the password
    empty = replay_cli(env)
    assert "no dead-lettered requests" in empty.stdout
    for result in (first, second, empty):
        assert PASSWORD not in result.stdout + result.stderr
