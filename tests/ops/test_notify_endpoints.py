"""notify's channels against real local endpoints: an HTTP server standing in for Slack's webhook,
and aiosmtpd (plain, and STARTTLS with AUTH and a certificate of our own CA)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from devstack.emulators import Emulator
from tests import forkserver
from tests.e2e.stack import settings_from_env
from tests.ops.endpoints import SLACK_PATH, Endpoints, SmtpStandIn, body_of
from tests.ops.runs import RunScript
from worker.commands.alert_channels import EmailChannel, SendError, channels_from
from worker.commands.alert_rules import Rules, RulesFileError
from worker.commands.alert_state import StateStore
from worker.commands.alerting import decide
from worker.commands.notify import Notifier, build_notifier
from worker.errors import SourceAuthError
from worker.events import MemoryEventBus
from worker.logs import REDACTOR, JsonFormatter
from worker.messages import encode_event
from worker.settings import Settings

DB_PASSWORD = "Db-Canary:42@pw"
SMTP_PASSWORD = "Smtp-Canary-77"


def settings(env: dict[str, str], **more: str) -> Settings:
    return settings_from_env({"GCP_PROJECT_ID": "etl-test", **env, **more})


def failing_run(bus: MemoryEventBus) -> RunScript:
    """A permanent failure whose error text named the password before the worker redacted it."""
    REDACTOR.register(DB_PASSWORD)
    return RunScript(bus).started().failed(SourceAuthError(
        f'password authentication failed for user "etl" (password={DB_PASSWORD})'))


def test_an_alert_reaches_slack_and_every_recipient(alert_endpoints: Endpoints, tmp_path: Path) -> None:
    bus = MemoryEventBus()
    notifier = Notifier(StateStore(tmp_path), Rules(), channels_from(settings(alert_endpoints.env())))
    run = failing_run(bus)
    for event in bus.events:
        notifier.handle(encode_event(event))
    [slack] = alert_endpoints.slack.wait(1)
    assert slack["text"] == ":rotating_light: orders (data source 7) failed permanently"
    fields = [f["text"] for block in slack["attachments"][0]["blocks"] for f in block.get("fields", [])]
    assert f"*run*\n{run.run_id}" in fields
    assert any(f.startswith("*error*\nSourceAuthError: password authentication failed") for f in fields)
    [mail] = alert_endpoints.smtp.wait(1)
    assert mail["Subject"] == "[etl alert] orders (data source 7) failed permanently"
    assert mail["To"] == "ops@example.test, dba@example.test"
    body = body_of(mail)
    assert body.startswith("orders (data source 7) failed permanently\n")
    assert f"run      {run.run_id}" in body and "error    SourceAuthError: password authentication" in body
    everything = str(slack) + alert_endpoints.smtp.inbox.raw[0].decode()
    assert DB_PASSWORD not in everything and "password=***" in everything


def test_a_refused_send_raises_without_the_webhook_and_the_retry_sends_what_is_missing(
    alert_endpoints: Endpoints, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = MemoryEventBus()
    notifier = Notifier(StateStore(tmp_path), Rules(), channels_from(settings(alert_endpoints.env())))
    failing_run(bus)
    event = encode_event(bus.events[-1])
    alert_endpoints.slack.fail_next = 1
    with pytest.raises(SendError) as refused:
        notifier.handle(event)
    assert str(refused.value) == "Slack webhook answered HTTP 500"
    notifier.handle(event)  # redelivered: Slack now answers
    assert len(alert_endpoints.slack.wait(1)) == 1 and len(alert_endpoints.smtp.wait(1)) == 1
    # Slack accepted, e-mail down: the retry sends the e-mail only
    alert_endpoints.smtp.close()
    failing_run(bus)  # another table's incident
    bus.events[-1] = bus.events[-1].model_copy(update={"dest_table": "customers"})
    with pytest.raises(SendError, match=r"e-mail via 127\.0\.0\.1"):
        notifier.handle(encode_event(bus.events[-1]))
    assert len(alert_endpoints.slack.received) == 2
    alert_endpoints.smtp = SmtpStandIn()
    again = Notifier(StateStore(tmp_path), Rules(), channels_from(settings(alert_endpoints.env())))
    again.handle(encode_event(bus.events[-1]))
    assert len(alert_endpoints.slack.received) == 2 and len(alert_endpoints.smtp.wait(1)) == 1
    # And the webhook URL (a secret) is in no log line: the redactor knows it
    formatter = JsonFormatter()
    logging.getLogger("t").error("posting to %s", alert_endpoints.slack.url)
    assert all(SLACK_PATH not in formatter.format(r) for r in caplog.records)


def test_starttls_with_auth_and_a_private_ca(tmp_path: Path) -> None:
    server = SmtpStandIn(tls_dir=tmp_path, user="alerts", password=SMTP_PASSWORD)
    try:
        env = {"ETL_ALERT_SMTP_HOST": "127.0.0.1", "ETL_ALERT_SMTP_PORT": str(server.port),
               "ETL_ALERT_SMTP_SECURITY": "starttls", "ETL_ALERT_SMTP_USERNAME": "alerts",
               "ETL_ALERT_SMTP_CA_FILE": str(server.cert), "ETL_ALERT_EMAIL_FROM": "etl@example.test",
               "ETL_ALERT_EMAIL_TO": "ops@example.test"}
        bus = MemoryEventBus()
        failing_run(bus)
        [first] = decide(bus.events[-1].model_dump(mode="json"), {}, Rules()).alerts
        EmailChannel(settings(env, ETL_ALERT_SMTP_PASSWORD=SMTP_PASSWORD)).send(first)
        assert server.wait(1)[0]["Subject"].endswith("failed permanently")
        with pytest.raises(SendError) as refused:  # a wrong password is refused, and not shown
            EmailChannel(settings(env, ETL_ALERT_SMTP_PASSWORD="wrong-" + SMTP_PASSWORD)).send(first)
        assert "SMTPAuthenticationError" in str(refused.value) and SMTP_PASSWORD not in str(refused.value)
        no_ca = {k: v for k, v in env.items() if k != "ETL_ALERT_SMTP_CA_FILE"}
        with pytest.raises(SendError, match="CERTIFICATE_VERIFY_FAILED"):  # our CA only
            EmailChannel(settings(no_ca, ETL_ALERT_SMTP_PASSWORD=SMTP_PASSWORD)).send(first)
    finally:
        server.close()


def test_notify_needs_a_channel_and_a_valid_rules_file(tmp_path: Path, pubsub_emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="no alert channel"):
        build_notifier(settings({"ETL_NOTIFY_STATE_DIR": str(tmp_path)}))
    bad = tmp_path / "rules.json"
    bad.write_text('{"rules": [{"kind": "slow_run"}]}')
    with pytest.raises(RulesFileError, match="seconds"):
        build_notifier(settings({"ETL_NOTIFY_STATE_DIR": str(tmp_path),
                                 "ETL_ALERT_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x"}), str(bad))
    assert "etl-worker: no alert channel" in _cli_stderr(tmp_path, pubsub_emulator.host_port)


def _cli_stderr(tmp_path: Path, pubsub_host: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_ALERT_")}
    env |= {"GCP_PROJECT_ID": "etl-test", "ETL_NOTIFY_STATE_DIR": str(tmp_path),
            "PUBSUB_EMULATOR_HOST": pubsub_host}
    result = forkserver.run([sys.executable, "-m", "worker", "notify"], env=env, timeout=60)
    assert result.returncode == 2
    return result.stderr
