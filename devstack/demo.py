"""`make demo`: the whole product path on this machine, started and stopped by this script.

Starts the Pub/Sub and BigQuery emulators, runs `etl-worker setup`, seeds a demo `orders` table
(SQLite by default; DEMO_SOURCE=postgresql or mysql uses the local servers), starts `etl-worker
serve`, publishes an `etl-run-requested` message as Django would, prints the events as they arrive,
then the loaded row count and a few rows queried back from BigQuery, and stops everything.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from google.cloud import pubsub_v1

from devstack.emulators import running, stop_process
from worker.sinks.bigquery_client import make_bigquery_client

PROJECT = "etl-demo"
DATASET = "raw_data"
ROWS = 5_000
STATE_DIR = Path(".run")
EVENTS_SUBSCRIPTION = "etl-run-events-demo"
TIMEOUT_S = 180.0


def main() -> int:
    source = os.environ.get("DEMO_SOURCE", "sqlite")
    STATE_DIR.mkdir(exist_ok=True)
    print(f"== starting the Pub/Sub and BigQuery emulators (logs in {STATE_DIR}/)")
    with running(PROJECT, STATE_DIR) as (pubsub, bigquery):
        env = worker_env(pubsub.host_port, bigquery.host_port)
        os.environ.update(env)
        print(f"   Pub/Sub emulator {pubsub.host_port}, BigQuery emulator {bigquery.host_port}")
        print("== etl-worker setup")
        etl_worker(env, "setup")
        subscribe_to_events(env)
        request = seed(source)
        print(f"== seeded {ROWS} rows into the demo {source} table `orders`")
        worker = start_worker(env)
        try:
            request_path = STATE_DIR / "request.json"
            request_path.write_text(json.dumps(request, indent=2))
            print("== publishing etl-run-requested (as Django would):")
            print(indent(redacted(request)))
            etl_worker(env, "publish", "--request", str(request_path), "--quiet-out")
            completed = show_events(env)
        finally:
            stop_process(worker)
        show_result(bigquery.host_port)
    print(f"== stopped the worker and the emulators; worker log: {STATE_DIR}/worker.log")
    return 0 if completed else 1


def worker_env(pubsub_host: str, bq_host: str) -> dict[str, str]:
    return {
        "GCP_PROJECT_ID": PROJECT, "BIGQUERY_DATASET": DATASET, "PUBSUB_EMULATOR_HOST": pubsub_host,
        "BIGQUERY_EMULATOR_HOST": bq_host, "ETL_BATCH_SIZE": "1000", "ETL_PART_ROWS": "2000",
        "ETL_PROGRESS_INTERVAL_SECONDS": "0", "ETL_RETRY_MIN_BACKOFF_SECONDS": "5",
    }


def etl_worker(env: dict[str, str], *args: str) -> None:
    quiet = "--quiet-out" in args
    argv = [sys.executable, "-m", "worker", "--no-json-logs", *[a for a in args if a != "--quiet-out"]]
    result = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise SystemExit(f"etl-worker {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    if not quiet:
        print(indent(result.stdout.rstrip()))


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    print(f"== starting etl-worker serve (log: {STATE_DIR}/worker.log)")
    log = (STATE_DIR / "worker.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--no-json-logs", "serve"], env={**os.environ, **env},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def subscribe_to_events(env: dict[str, str]) -> None:
    subscriber = pubsub_v1.SubscriberClient()
    publisher = pubsub_v1.PublisherClient()
    subscriber.create_subscription(request={
        "name": subscriber.subscription_path(PROJECT, EVENTS_SUBSCRIPTION),
        "topic": publisher.topic_path(PROJECT, "etl-run-events"), "enable_message_ordering": True})


def show_events(env: dict[str, str]) -> bool:
    """Print events until the run ends; return True when it completed."""
    print("== events from etl-run-events (what Django consumes):")
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(PROJECT, EVENTS_SUBSCRIPTION)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        response = subscriber.pull(subscription=path, max_messages=50, timeout=10)
        for received in response.received_messages:
            event = json.loads(received.message.data)
            print("   " + describe(event))
            if event["event_type"] in ("run.completed", "run.failed"):
                subscriber.acknowledge(subscription=path, ack_ids=[received.ack_id])
                return bool(event["event_type"] == "run.completed")
        if response.received_messages:
            subscriber.acknowledge(subscription=path,
                                   ack_ids=[r.ack_id for r in response.received_messages])
    print("   no terminal event within the time limit; see the worker log")
    return False


def describe(event: dict[str, Any]) -> str:
    base = (f"#{event['seq']:<2} {event['event_type']:<14} run={event['run_id']} "
            f"rows_extracted={event['rows_extracted']} rows_loaded={event['rows_loaded']} "
            f"batches={event['batches_loaded']} t={event['duration_seconds']:.2f}s")
    if event["event_type"] == "run.progress":
        return base + f" phase={event['phase']}"
    if event["event_type"] == "run.completed":
        return base + (f" window=[{event['window_low']}, {event['window_high']}) "
                       f"source_count={event['source_row_count']} watermark={event['watermark']}")
    if event["event_type"] == "run.failed":
        return base + f" error={event['error']}"
    return base


def show_result(bq_host: str) -> None:
    client = make_bigquery_client(PROJECT, bq_host)
    table = f"`{PROJECT}.{DATASET}.orders`"
    count = next(iter(client.query(f"SELECT COUNT(*) AS n FROM {table}").result()))["n"]
    print(f"== BigQuery {DATASET}.orders now holds {count} rows; the first five:")
    rows = client.query(f"SELECT * FROM {table} ORDER BY id LIMIT 5").result()
    for row in rows:
        print("   " + json.dumps(dict(row.items()), default=str, ensure_ascii=False))


# --- the demo source -----------------------------------------------------------------------------
def seed(source: str) -> dict[str, Any]:
    if source == "sqlite":
        path = (STATE_DIR / "demo.sqlite").resolve()
        path.unlink(missing_ok=True)
        engine = sa.create_engine(f"sqlite:///{path}")
        params: dict[str, Any] = {"database": str(path)}
        schema = None
    elif source == "postgresql":
        engine = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test")
        params = {"host": "127.0.0.1", "port": 5432, "database": "test", "username": "postgres",
                  "password": "not-needed-with-trust-auth"}
        schema = "etl_demo"
    elif source == "mysql":
        engine = sa.create_engine("mysql+mysqldb://root@127.0.0.1:3306/test")
        params = {"host": "127.0.0.1", "port": 3306, "database": "test", "username": "root",
                  "password": ""}
        schema = "etl_demo"
    else:
        raise SystemExit(f"DEMO_SOURCE must be sqlite, postgresql or mysql, not {source!r}")
    create_orders(engine, schema)
    engine.dispose()
    return {
        "schema_version": 1, "data_source_id": 1, "etl_run_id": int(time.time()),
        "source_type": source, "connection_params": params, "schema_name": schema,
        "source_table_name": "orders", "dest_table_name": "orders", "load_type": "transactional",
        "timestamp_column": "created_at", "historical_start_date": "2024-01-01",
    }


def create_orders(engine: sa.Engine, schema: str | None) -> None:
    if schema:  # a fresh PostgreSQL schema / MariaDB database for the demo
        kind, cascade = ("SCHEMA", " CASCADE") if engine.dialect.name == "postgresql" else ("DATABASE", "")
        name = engine.dialect.identifier_preparer.quote(schema)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP {kind} IF EXISTS {name}{cascade}")
            conn.exec_driver_sql(f"CREATE {kind} {name}")
    orders = sa.Table(
        "orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer", sa.String(80)), sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("status", sa.String(20)), sa.Column("created_at", sa.DateTime), schema=schema)
    orders.create(engine)
    rng = random.Random(7)
    start = datetime(2024, 6, 1, tzinfo=UTC).replace(tzinfo=None)
    rows = [{"id": i, "customer": f"customer-{rng.randint(1, 300)}",
             "amount": Decimal(rng.randint(100, 99_999)) / 100,
             "status": rng.choice(["new", "paid", "shipped", "cancelled"]),
             "created_at": start + timedelta(minutes=i * 7, microseconds=rng.randint(0, 999_999))}
            for i in range(1, ROWS + 1)]
    with engine.begin() as conn:
        conn.execute(orders.insert(), rows)


def redacted(request: dict[str, Any]) -> dict[str, Any]:
    params = dict(request["connection_params"])
    if params.get("password"):
        params["password"] = "***"
    return {**request, "connection_params": params}


def indent(text: str | dict[str, Any]) -> str:
    text = json.dumps(text, indent=2) if isinstance(text, dict) else text
    return "\n".join("   " + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
