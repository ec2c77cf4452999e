"""`fresh_pubsub_emulator` (tests/conftest.py): a Pub/Sub emulator of one test's own, for tests that
kill subscribers (the emulator's dead-stream bug then cannot reach the tests that follow)."""

from __future__ import annotations

import os

from devstack.emulators import Emulator
from tests.e2e.stack import Stack, make_settings, serving


def test_a_fresh_emulator_is_the_tests_own_and_serves_a_run(
    pubsub_emulator: Emulator, fresh_pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str
) -> None:
    # Given the session's emulator and this test's own
    assert fresh_pubsub_emulator.host_port != pubsub_emulator.host_port
    # Then clients made without an endpoint talk to this test's emulator
    assert os.environ["PUBSUB_EMULATOR_HOST"] == fresh_pubsub_emulator.host_port
    # And the whole path works on it: topology, the serve loop, events
    stack = Stack(make_settings(fresh_pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset))
    with serving(stack.settings):
        stack.publish({"data_source_id": 9, "etl_run_id": 451, "source_type": "oracle",
                       "dest_table_name": "x", "load_type": "catalog"})
        failed = stack.wait_terminal("etl-run-451")[0]
    assert failed["event_type"] == "run.failed" and failed["error"]["type"] == "MessageDecodeError"
    assert fresh_pubsub_emulator.process.poll() is None
