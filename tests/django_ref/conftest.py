"""A real Django (reference/django) against the real emulators, PostgreSQL and the real worker.

Django is configured once, at import (django.setup() opens no connection). Its database: one
migrated template per session, and per test a fresh `CREATE DATABASE ... TEMPLATE` (fast), dropped
afterwards. Per test, `etl` also gives unique Pub/Sub names (the worker's `setup` made by Stack),
a fresh BigQuery dataset, a seeded PostgreSQL `orders` table, the worker's `serve` loop in a thread
and an open EventConsumer (one streaming pull for the whole test: see the emulator notes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "reference" / "django"
sys.path.insert(0, str(REFERENCE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "etl_reference.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import override_settings  # noqa: E402
from etl.apply import Outcome  # noqa: E402
from etl.consumer import EventConsumer  # noqa: E402
from etl.models import DataSource, Job, LoadType, Run, RunState  # noqa: E402
from google.cloud import bigquery  # noqa: E402

from devstack.emulators import Emulator  # noqa: E402
from tests.conftest import PROJECT, unique  # noqa: E402
from tests.e2e.sources import SeededSource, seed  # noqa: E402
from tests.e2e.stack import EVENT_WAIT_S, Stack, bq_count, serving, settings_env, settings_from_env  # noqa: E402

PASSWORD_ENV = "ETL_SECRET_DJANGO_REF"  # a reference the worker resolves (trust auth ignores the value)
NO_DATABASE = "djref_no_database_between_tests"


def use_database(name: str) -> None:
    """Point Django's default connection at another database (closing this thread's connections)."""
    connections.close_all()
    settings.DATABASES["default"]["NAME"] = name
    connections.settings["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name


@pytest.fixture(scope="session")
def django_template(pg_admin: sa.Engine) -> Iterator[str]:
    name = unique("djref_tmpl")
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        use_database(name)
        call_command("migrate", verbosity=0)
        use_database(NO_DATABASE)  # a template must have no connection when it is copied
        yield name
    finally:
        use_database(NO_DATABASE)
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def django_db(django_template: str, pg_admin: sa.Engine) -> Iterator[str]:
    """A migrated database of its own for this test."""
    name = unique("djref")
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{django_template}"'))
    use_database(name)
    try:
        yield name
    finally:
        use_database(NO_DATABASE)
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Harness:
    stack: Stack
    env: dict[str, str]
    source: SeededSource
    consumer: EventConsumer
    bq: bigquery.Client
    outcomes: list[tuple[Outcome, str | None]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return self.env["BIGQUERY_DATASET"]

    def data_source(self, port: int = 5432) -> DataSource:
        url = self.source.engine.url
        # Django has no type hints here (no django-stubs): its managers return Any, named below.
        source: DataSource = DataSource.objects.create(
            name=f"pg-{port}", source_type="postgresql", host=str(url.host), port=port,
            database=str(url.database), username=str(url.username),
            password_kind="password_env", password_ref=PASSWORD_ENV)
        return source

    def job(self, load_type: str, source: DataSource | None = None, **fields: Any) -> Job:
        values: dict[str, Any] = {
            "name": f"orders {load_type}", "data_source": source or self.data_source(),
            "source_schema": self.source.schema, "source_table": "orders", "dest_table": "orders",
            "load_type": load_type,
        }
        if load_type != LoadType.CATALOG:
            values.update(timestamp_column="created_at", historical_start_date="2020-01-01")
        job: Job = Job.objects.create(**{**values, **fields})
        return job

    def consume_until(self, predicate: Callable[[], bool], timeout_s: float = EVENT_WAIT_S) -> None:
        self.consumer.process(until=predicate, max_seconds=timeout_s)
        assert predicate(), f"not reached within {timeout_s}s; outcomes: {self.outcomes[-10:]}"

    def wait_state(self, run: Run, *states: str, timeout_s: float = EVENT_WAIT_S) -> Run:
        self.consume_until(lambda: Run.objects.get(pk=run.pk).state in states, timeout_s)
        reached: Run = Run.objects.get(pk=run.pk)
        return reached

    def states_seen(self, run: Run) -> list[str]:
        """The run's state after each event applied to it, in order (consecutive repeats folded)."""
        seen: list[str] = []
        for outcome, state in self.outcomes:
            if outcome.run_pk == run.pk and outcome.applied and state and (not seen or seen[-1] != state):
                seen.append(state)
        return seen

    def ledger(self, run: Run) -> dict[str, Any]:
        query = f"SELECT * FROM `{PROJECT}.{self.dataset}._etl_ledger` WHERE run_id = @run_id"
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter("run_id", "STRING", run.run_id)])
        rows = [dict(row.items()) for row in self.bq.query(query, job_config=config).result()]
        assert len(rows) == 1, rows
        return rows[0]

    def dest_count(self, table: str = "orders") -> int:
        return bq_count(self.bq, self.dataset, table)

    def assert_matches_ledger(self, run: Run) -> dict[str, Any]:
        """Django's completed run says what BigQuery's ledger says about it."""
        row = self.ledger(run)
        assert run.state == RunState.COMPLETED
        mine = {name: getattr(run, name) for name in (
            "rows_extracted", "rows_loaded", "source_row_count", "window_low", "window_high",
            "committed_at")}
        assert mine == {name: row[name] for name in mine}, (mine, row)
        return row


def _record(harness_outcomes: list[tuple[Outcome, str | None]]) -> Callable[[Outcome], None]:
    def on_outcome(outcome: Outcome) -> None:
        state = Run.objects.filter(pk=outcome.run_pk).values_list("state", flat=True).first()
        harness_outcomes.append((outcome, state))
    return on_outcome


def etl_settings(env: dict[str, str]) -> dict[str, Any]:
    """settings.ETL for a test: the worker's names, the CLI as the replay command."""
    return {
        "GCP_PROJECT_ID": PROJECT, "REQUEST_TOPIC": env["ETL_REQUEST_TOPIC"],
        "EVENTS_TOPIC": env["ETL_EVENTS_TOPIC"], "EVENTS_SUBSCRIPTION": env["ETL_EVENTS_TOPIC"] + "-django",
        "PUBLISH_MODE": "on_commit", "SCHEMAS_DIR": str(ROOT / "schemas"),
        "REPLAY_COMMAND": [sys.executable, "-m", "worker"], "REPLAY_ENV": env, "ENVIRONMENT": "test",
    }


@pytest.fixture
def etl(django_db: str, pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str,
        bq_client: bigquery.Client, pg_admin: sa.Engine, pg_schema: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    env = settings_env(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset, ETL_BATCH_SIZE=100,
                       ETL_MAX_RETRIES=1, ETL_MAX_DELIVERY_ATTEMPTS=5)
    stack = Stack(settings_from_env(env))
    monkeypatch.setenv(PASSWORD_ENV, "unused-with-trust-auth")
    source = seed("postgresql", pg_admin, pg_schema, 250)
    with override_settings(ETL=etl_settings(env)):
        outcomes: list[tuple[Outcome, str | None]] = []
        consumer = EventConsumer(on_outcome=_record(outcomes)).start()  # subscribed before any run
        try:
            with serving(stack.settings):
                yield Harness(stack, env, source, consumer, bq_client, outcomes)
        finally:
            consumer.close()
            connections.close_all()
