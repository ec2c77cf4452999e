"""Why the request topic carries no Pub/Sub schema, proven on the emulator, and where the contract is
enforced instead: `etl-worker publish` refuses what the worker would refuse.

A topic schema was the issue's first choice. On the emulator (gcloud 528, emulator 0.8.20):
protocol buffer schemas are not implemented (501), and an Avro schema with JSON encoding refuses a
body that omits any field, even one with a default, and wants a non-null union value wrapped
(`{"long": 5}`). Plain JSON requests omit their optional fields, so no Avro schema can accept them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.pubsub_v1.types import Encoding, Schema

from devstack.emulators import Emulator
from tests import forkserver
from tests.conftest import PROJECT, unique

AVRO = {"type": "record", "name": "Request", "fields": [
    {"name": "data_source_id", "type": "long"},
    {"name": "etl_run_id", "type": ["null", "long"], "default": None},
]}


def schema_topic(kind: Schema.Type, definition: str) -> str:
    schemas, publisher = pubsub_v1.SchemaServiceClient(), pubsub_v1.PublisherClient()
    name = unique("schema")
    schema = schemas.create_schema(request={
        "parent": f"projects/{PROJECT}", "schema_id": name,
        "schema": Schema(name=f"projects/{PROJECT}/schemas/{name}", type_=kind, definition=definition)})
    topic: str = publisher.topic_path(PROJECT, name)
    publisher.create_topic(request={"name": topic,
                                    "schema_settings": {"schema": schema.name, "encoding": Encoding.JSON}})
    return topic


def published(topic: str, body: dict[str, object]) -> bool:
    try:
        pubsub_v1.PublisherClient().publish(topic, json.dumps(body).encode()).result(timeout=30)
    except gexc.InvalidArgument:
        return False
    return True


def test_the_emulator_has_no_protocol_buffer_schemas(pubsub_emulator: Emulator) -> None:
    with pytest.raises(gexc.MethodNotImplemented):
        schema_topic(Schema.Type.PROTOCOL_BUFFER, 'syntax = "proto3"; message R { int64 a = 1; }')


def test_an_avro_schema_refuses_plain_json_with_an_optional_field_left_out(
    pubsub_emulator: Emulator,
) -> None:
    topic = schema_topic(Schema.Type.AVRO, json.dumps(AVRO))
    assert not published(topic, {"data_source_id": 1})  # Cloud Scheduler's body has no etl_run_id
    assert not published(topic, {"data_source_id": 1, "etl_run_id": 5})  # plain JSON, as Django sends
    assert published(topic, {"data_source_id": 1, "etl_run_id": {"long": 5}})  # Avro's own JSON only


def test_publish_refuses_a_request_the_worker_would_refuse(
    pubsub_emulator: Emulator, tmp_path: Path
) -> None:
    names = unique("pub")
    env = {**os.environ, "GCP_PROJECT_ID": PROJECT, "PUBSUB_EMULATOR_HOST": pubsub_emulator.host_port,
           "ETL_REQUEST_TOPIC": f"{names}-req"}
    pubsub_v1.PublisherClient().create_topic(name=f"projects/{PROJECT}/topics/{names}-req")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data_source_id": 1, "source_type": "oracle", "load_type": "catalog",
                               "connection_params": {"database": "d", "password": "pw-not-shown"}}))
    argv = [sys.executable, "-m", "worker", "--no-json-logs", "publish", "--request", str(bad)]
    result = forkserver.run(argv, env=env, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("etl-worker: not published: invalid etl-run-requested message: ")
    assert "source_type" in result.stderr and "pw-not-shown" not in result.stderr
