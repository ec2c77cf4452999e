"""notify on the Pub/Sub emulator: real events (the worker's RunEvents through PubSubEventBus, and a
real failed run of a worker serving the emulators), real Slack stand-in and SMTP server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devstack.emulators import Emulator
from tests.e2e.sources import SeededSource
from tests.e2e.stack import Stack, serving, settings_env, settings_from_env
from tests.e2e.test_secrets_never_leak import FORMS, PASSWORD, pg_users, request  # noqa: F401
from tests.ops.endpoints import SLACK_PATH, Endpoints, body_of
from tests.ops.runs import RunScript
from tests.password_postgres import PasswordPostgres
from worker.commands.alert_state import StateStore
from worker.commands.notify import notify
from worker.commands.topology import setup
from worker.errors import SourceSchemaError
from worker.events import EventBus, PubSubEventBus
from worker.messages import Event
from worker.settings import Settings

WAIT_S = 90.0
SCHEMA_ERROR = SourceSchemaError("column 'totl' not found in source table public.orders")


def notify_env(pubsub: Emulator, bq: Emulator, dataset: str, endpoints: Endpoints, state: Path,
               **more: Any) -> dict[str, str]:
    env = settings_env(pubsub.host_port, bq.host_port, dataset, ETL_NOTIFY_STATE_DIR=str(state),
                       ETL_NOTIFY_RETRY_MIN_BACKOFF_SECONDS=1, **endpoints.env(), **more)
    env["ETL_NOTIFY_SUBSCRIPTION"] = env["ETL_EVENTS_TOPIC"] + "-notify"
    return env


@contextlib.contextmanager
def notifying(settings: Settings) -> Iterator[None]:
    """The real notify loop in a thread, stopped at the end of the block."""
    stop, ready, errors = threading.Event(), threading.Event(), []

    def target() -> None:
        try:
            notify(settings, stop=stop, ready=ready)
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(60) and not errors, errors
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive() and not errors, errors


class Tee:
    """Publishes through `inner` and keeps the event ids."""

    def __init__(self, inner: EventBus) -> None:
        self.inner, self.ids = inner, list[str]()

    def publish(self, event: Event) -> None:
        self.inner.publish(event)
        self.ids.append(event.event_id)


def wait_processed(state: Path, event_ids: list[str]) -> None:
    """Until notify has stored every one of these events as processed (then it has acked them)."""
    store = StateStore(state)
    deadline = time.monotonic() + WAIT_S
    try:
        while not all(store.processed(e) for e in event_ids):
            assert time.monotonic() < deadline, "notify did not process every event"
            time.sleep(0.2)
    finally:
        store.close()


def test_one_alert_per_incident_under_redelivery_a_failed_send_and_a_restart(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, alert_endpoints: Endpoints,
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    env = notify_env(pubsub_emulator, bq_emulator, bq_dataset, alert_endpoints, state)
    settings = settings_from_env(env)
    setup(settings)
    bus = Tee(PubSubEventBus(settings.gcp_project_id, settings.etl_events_topic))
    slack, smtp = alert_endpoints.slack, alert_endpoints.smtp
    with notifying(settings):
        # Given a permanent failure, published twice (a worker that died after publishing), while
        # Slack refuses the first post
        slack.fail_next = 1
        failed = RunScript(bus).started().failed(SCHEMA_ERROR)
        RunScript(bus, run_id=failed.run_id).failed(SCHEMA_ERROR)  # same run, same ids
        # Then one alert per channel: the refused post came back (nack) and went through
        wait_processed(state, bus.ids)
        assert [m["text"] for m in slack.received] == [
            ":rotating_light: orders (data source 7) failed permanently"]
        assert slack.refused == 1
        assert smtp.wait(1)[0]["Subject"] == "[etl alert] orders (data source 7) failed permanently"
    # When notify restarts (a new subscription: the emulator keeps dead streams of a cancelled one)
    env2 = {**env, "ETL_NOTIFY_SUBSCRIPTION": env["ETL_NOTIFY_SUBSCRIPTION"] + "-2"}
    settings2 = settings_from_env(env2)
    with notifying(settings2):
        second = RunScript(bus).started().failed(SCHEMA_ERROR)  # the incident is still open
        RunScript(bus, run_id=failed.run_id).failed(SCHEMA_ERROR)  # and the first event once more
        recovered = RunScript(bus).started().completed(rows=250)
        del second
        wait_processed(state, bus.ids)
    # Then nothing but the recovery was sent after the restart
    assert [m["text"] for m in slack.received] == [
        ":rotating_light: orders (data source 7) failed permanently",
        f":white_check_mark: orders (data source 7) recovered: run {recovered.run_id} committed"]
    assert [m["Subject"] for m in smtp.inbox.messages] == [
        "[etl alert] orders (data source 7) failed permanently",
        f"[etl resolved] orders (data source 7) recovered: run {recovered.run_id} committed"]
    assert "rows loaded  250" in body_of(smtp.inbox.messages[1])


def test_a_real_failed_run_alerts_through_the_cli_without_a_secret(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, alert_endpoints: Endpoints,
    pg_users: SeededSource, password_pg: PasswordPostgres, tmp_path: Path,  # noqa: F811
) -> None:
    env = notify_env(pubsub_emulator, bq_emulator, bq_dataset, alert_endpoints, tmp_path / "state",
                     ETL_MAX_RETRIES=1)
    rules = tmp_path / "alerts.toml"
    rules.write_text('[[rules]]\nkind = "consecutive_failures"\ncount = 1\nper = "data_source"\n')
    stack = Stack(settings_from_env(env))
    stderr = tmp_path / "notify.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--log-level", "DEBUG", "notify", "--rules", str(rules)],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + WAIT_S
        while "notify: alerting from" not in stderr.read_text():
            assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
        # Given a real run whose request carries a password the source refuses
        wrong = request(pg_users, 1501, password_pg.port, f"{pg_users.schema}_other", password=PASSWORD)
        with serving(stack.settings):
            stack.publish(wrong)
            [failed] = stack.wait_terminal("etl-run-1501")
        assert failed["error"]["type"] == "SourceAuthError" and failed["will_retry"] is False
        # Then the permanent failure and the data source's streak each alert, on both channels
        texts = sorted(m["text"] for m in alert_endpoints.slack.wait(2))
        assert texts == [":rotating_light: data source 7: 1 failed delivery in a row",
                         ":rotating_light: orders_1501 (data source 7) failed permanently"]
        mails = alert_endpoints.smtp.wait(2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, stderr.read_text()
    # And neither the password nor the webhook is in an alert or in notify's log lines
    logs = stderr.read_text()
    assert "alert sent on slack" in logs and "alert sent on email" in logs
    shown = json.dumps(alert_endpoints.slack.received) + "".join(raw.decode() for raw in
                                                               alert_endpoints.smtp.inbox.raw) + logs
    assert "SourceAuthError" in body_of(mails[0]) + body_of(mails[1])
    for form in FORMS:
        assert form not in shown
    assert SLACK_PATH not in shown and alert_endpoints.slack.url not in shown
