"""notify's decisions: which events alert, one alert per incident, recovery, rules, state on disk.

Events are built by the worker's own RunEvents; the state is the real SQLite store in a tmp dir;
the channel here only records (the real Slack and SMTP endpoints are in test_notify_endpoints.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ops.runs import RunScript
from worker.commands.alert_channels import SendError
from worker.commands.alert_rules import ConsecutiveFailures, Rules, RulesFileError, load_rules
from worker.commands.alert_state import StateStore
from worker.commands.alerting import Alert
from worker.commands.notify import Notifier
from worker.errors import DataQualityError, SourceConnectionError, SourceSchemaError
from worker.events import MemoryEventBus
from worker.messages import encode_event

SCHEMA_ERROR = SourceSchemaError("column 'totl' not found in source table public.orders")
DOWN = SourceConnectionError("connection refused (127.0.0.1:6543)")


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.fail = 0

    def send(self, alert: Alert) -> None:
        if self.fail:
            self.fail -= 1
            raise SendError("recorder is down")
        self.alerts.append(alert)

    @property
    def titles(self) -> list[str]:
        return [a.title for a in self.alerts]


class Setup:
    def __init__(self, tmp_path: Path, rules: Rules | None = None) -> None:
        self.dir, self.rules = tmp_path / "state", rules or Rules()
        self.bus, self.channel = MemoryEventBus(), Recorder()
        self.store = StateStore(self.dir)
        self.notifier = Notifier(self.store, self.rules, [self.channel])
        self.fed = 0

    def feed(self) -> list[str]:
        """Hand every event published since the last feed to notify; the titles it alerted."""
        before = len(self.channel.alerts)
        for event in self.bus.events[self.fed:]:
            self.notifier.handle(encode_event(event))
        self.fed = len(self.bus.events)
        return self.channel.titles[before:]

    def restart(self) -> None:
        self.store.close()
        self.store = StateStore(self.dir)
        self.notifier = Notifier(self.store, self.rules, [self.channel])

    def run(self, table: str = "orders", data_source_id: int = 7) -> RunScript:
        return RunScript(self.bus, table=table, data_source_id=data_source_id)


def test_by_default_a_permanent_failure_alerts_once_and_a_success_recovers(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.run().started().failed(SCHEMA_ERROR)
    assert s.feed() == ["orders (data source 7) failed permanently"]
    details = dict(s.channel.alerts[0].details)
    assert details["error"].startswith("SourceSchemaError: column 'totl' not found")
    s.run().started().failed(SCHEMA_ERROR)  # the incident is open: no second alert
    assert s.feed() == []
    run = s.run().started().completed(rows=250)
    assert s.feed() == [f"orders (data source 7) recovered: run {run.run_id} committed"]
    recovery = s.channel.alerts[-1]
    assert recovery.status == "resolved" and "recovered" in recovery.title
    assert dict(recovery.details)["rows loaded"] == "250"
    assert s.feed() == []


def test_transient_failures_alert_nobody_by_default_and_dead_lettering_does(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    run = s.run().started().failed(DOWN)  # will_retry: another delivery comes
    assert s.feed() == []
    run.dead_lettered(DOWN)  # the last delivery: run.failed (will_retry false, retryable) + dead letter
    assert s.feed() == ["orders (data source 7): request dead-lettered"]
    assert dict(s.channel.alerts[0].details)["once fixed"] == f"etl-worker replay --run-id {run.run_id}"


def test_a_redelivered_event_alerts_once(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.run().failed(SCHEMA_ERROR)
    s.feed()
    s.bus.events.append(s.bus.events[-1])  # Pub/Sub delivers it again
    assert s.feed() == []
    assert len(s.channel.alerts) == 1


def test_a_failed_send_raises_and_the_retry_sends_it_once(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.run().failed(SCHEMA_ERROR)
    s.channel.fail = 1
    with pytest.raises(SendError):
        s.feed()
    assert s.channel.alerts == [] and not s.store.processed(s.bus.events[-1].event_id)
    s.fed = 0  # redelivered
    assert s.feed() == ["orders (data source 7) failed permanently"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.run().failed(SCHEMA_ERROR)
    s.feed()
    s.restart()
    s.bus.events.append(s.bus.events[-1])
    s.run().failed(SCHEMA_ERROR)
    assert s.feed() == []  # same event again, then the open incident: nothing new
    s.run().completed()
    s.feed()
    assert [a.status for a in s.channel.alerts] == ["open", "resolved"]


def test_consecutive_failures_per_table_and_per_data_source(tmp_path: Path) -> None:
    rules = Rules.model_validate({"permanent_failure": False, "rules": [
        {"kind": "consecutive_failures", "count": 3},
        {"kind": "consecutive_failures", "count": 5, "per": "data_source"}]})
    s = Setup(tmp_path, rules)
    s.run(table="orders").failed(DOWN)
    s.run(table="orders").failed(SCHEMA_ERROR)
    assert s.feed() == []
    s.run(table="customers").failed(DOWN)
    assert s.feed() == []  # 2 of orders, 3 of the source
    s.run(table="orders").failed(DOWN)
    assert s.feed() == ["orders (data source 7): 3 failed deliveries in a row"]  # 4 of the source
    s.run(table="customers").failed(DOWN)
    assert s.feed() == ["data source 7: 5 failed deliveries in a row"]
    s.run(table="customers").completed()
    assert s.feed() == ["data source 7 recovered: run " + s.bus.events[-1].run_id + " committed"]
    s.run(table="orders").completed()
    assert s.feed() == ["orders (data source 7) recovered: run " + s.bus.events[-1].run_id + " committed"]


def test_rule_filters_pick_the_tables(tmp_path: Path) -> None:
    rules = Rules.model_validate({"rules": [
        {"kind": "consecutive_failures", "count": 1, "dest_table": ["orders"], "data_source_id": 7}]})
    s = Setup(tmp_path, rules)
    s.run(table="customers").failed(DOWN)
    s.run(table="orders", data_source_id=8).failed(DOWN)
    assert s.feed() == []
    s.run(table="orders").failed(DOWN)
    assert s.feed() == ["orders (data source 7): 1 failed delivery in a row"]


def test_a_quality_warning_alerts_until_a_clean_run(tmp_path: Path) -> None:
    s = Setup(tmp_path, Rules.model_validate({"rules": [{"kind": "quality_warning"}]}))
    warning = "quality rule max_null_fraction on column 'note': measured 0.4, allowed 0.1 (warn)"
    quality = {"rows": 10, "violations": [{"rule": "max_null_fraction", "on_violation": "warn"}]}
    s.run().completed(warnings=(warning,), quality=quality)
    s.run().completed(warnings=(warning,), quality=quality)
    assert s.feed() == ["orders (data source 7): quality warning"]
    assert dict(s.channel.alerts[0].details)["warnings"] == warning
    s.run().completed(quality={"rows": 10, "violations": []})
    assert s.feed() == ["orders (data source 7): quality back to normal"]


def test_a_quality_failure_is_a_permanent_failure(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.run().failed(DataQualityError("quality rule min_rows: measured 0, allowed 1 (fail)"))
    assert s.feed() == ["orders (data source 7) failed permanently"]


def test_a_slow_run_alerts_while_running_and_recovers_on_a_quick_one(tmp_path: Path) -> None:
    s = Setup(tmp_path, Rules.model_validate({"rules": [{"kind": "slow_run", "seconds": 60}]}))
    s.run().started().progress(100, at_s=30).progress(200, at_s=90).completed(seconds=120)
    assert s.feed() == ["orders (data source 7): run slower than 60s"]
    assert dict(s.channel.alerts[0].details)["running for"] == "90.0s"
    s.run().started().completed(seconds=20)
    assert s.feed() == ["orders (data source 7): runs back within their time"]


def test_a_late_failure_of_an_old_attempt_opens_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    old = s.run()
    old.failed(SCHEMA_ERROR)
    late = s.bus.events.pop()
    s.run().completed()
    s.feed()
    s.bus.events.append(late)
    assert s.feed() == []


def test_foreign_messages_are_ignored(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.notifier.handle(b"not json")
    s.notifier.handle(json.dumps({"hello": 1}).encode())
    broken = {"event_id": "e1", "event_type": "run.failed", "run_id": "r", "occurred_at": "yesterday"}
    s.notifier.handle(json.dumps(broken).encode())  # acked (stored), not retried forever
    assert s.channel.alerts == [] and s.store.processed("e1")


def test_rules_files_in_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "alerts.toml"
    toml.write_text('dead_lettered = false\n[[rules]]\nkind = "slow_run"\nseconds = 900\n'
                    'dest_table = ["orders"]\n')
    rules = load_rules(toml)
    assert not rules.dead_lettered and rules.permanent_failure and rules.rules[0].kind == "slow_run"
    as_json = tmp_path / "alerts.json"
    as_json.write_text(json.dumps({"rules": [{"kind": "consecutive_failures", "count": 3}]}))
    (rule,) = load_rules(as_json).rules
    assert isinstance(rule, ConsecutiveFailures) and rule.count == 3
    assert load_rules(None) == Rules()
    as_json.write_text(json.dumps({"rules": [{"kind": "consecutive_failure", "count": 3}]}))
    with pytest.raises(RulesFileError, match=r"alerts\.json"):
        load_rules(as_json)
    toml.write_text("rules = [")
    with pytest.raises(RulesFileError, match="not valid toml"):
        load_rules(toml)
