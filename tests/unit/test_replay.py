"""`replay` without Pub/Sub: what is shown, what is republished, and when a dead letter is acked."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.commands.replay import DeadLetter, Selection, describe, format_age, replay_attributes, run_replay
from worker.handlers.base import Delivery

DL = "CloudPubSubDeadLetter"
SECRET = "replay-secret-pw-42"
FIRST_PUBLISHED = datetime(2024, 5, 1, 11, 55, 0, 123000, tzinfo=UTC)


def body(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "data_source_id": 7, "etl_run_id": 11, "source_type": "postgresql",
        "connection_params": {"host": "127.0.0.1", "port": 5432, "database": "d", "username": "u",
                              "password": SECRET},
        "schema_name": "public", "source_table_name": "orders", "dest_table_name": "orders",
        "load_type": "catalog"}
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def letter(message_id: str, data: dict[str, Any] | bytes, publish_time: datetime | None = None,
           **attributes: str) -> DeadLetter:
    first = FIRST_PUBLISHED.isoformat(timespec="milliseconds")
    attrs = {f"{DL}SourceDeliveryCount": "5", f"{DL}SourceSubscription": "worker",
             f"{DL}SourceSubscriptionProject": "p", f"{DL}SourceTopicPublishTime": first, **attributes}
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return DeadLetter(ack_id=f"ack-{message_id}", message_id=message_id, data=raw, attributes=attrs,
                      publish_time=publish_time)


class FakeQueue:
    def __init__(self, letters: Sequence[DeadLetter]) -> None:
        self.letters = list(letters)
        self.log: list[tuple[str, str]] = []

    def pull(self) -> list[DeadLetter]:
        return self.letters

    def ack(self, letter: DeadLetter) -> None:
        self.log.append(("ack", letter.message_id))

    def release(self, letters: Sequence[DeadLetter]) -> None:
        self.log.extend(("release", item.message_id) for item in letters)


class FakePublisher:
    def __init__(self, queue: FakeQueue, fail_for: set[str] | None = None) -> None:
        self.queue = queue
        self.fail_for = fail_for or set()
        self.published: list[tuple[bytes, dict[str, str]]] = []

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        if attributes["replay_of"] in self.fail_for:
            raise TimeoutError("publish not confirmed")
        self.published.append((data, dict(attributes)))
        self.queue.log.append(("publish", attributes["replay_of"]))
        return f"new-{attributes['replay_of']}"


def replay(letters: Sequence[DeadLetter], selection: Selection, dry_run: bool = False,
           fail_for: set[str] | None = None) -> tuple[int, str, FakeQueue, FakePublisher]:
    queue = FakeQueue(letters)
    publisher = FakePublisher(queue, fail_for)
    out = io.StringIO()
    code = run_replay(queue, publisher, selection, dry_run=dry_run, out=out)
    return code, out.getvalue(), queue, publisher


def test_described_like_the_worker_sees_it() -> None:
    item = describe(letter("90", body()))
    assert (item.run_id, item.data_source_id, item.attempts) == ("etl-run-11", 7, 5)
    assert item.table == "postgresql:public.orders → orders"
    # the original's first publish (Pub/Sub's attribute), not the dead-letter copy's
    copied_at = FIRST_PUBLISHED + timedelta(minutes=5)
    assert describe(letter("90", body(), publish_time=copied_at)).first_published == FIRST_PUBLISHED
    assert item.first_published == FIRST_PUBLISHED


def test_first_published_falls_back_to_the_copys_publish_time() -> None:
    copied_at = FIRST_PUBLISHED + timedelta(minutes=5)
    attribute = f"{DL}SourceTopicPublishTime"
    for text in ("", "not a time"):
        unreadable = letter("90", body(), publish_time=copied_at, **{attribute: text})
        assert describe(unreadable).first_published == copied_at
    assert describe(letter("90", body(), publish_time=None, **{attribute: ""})).first_published is None


def test_run_id_without_etl_run_id_comes_from_the_run_id_attribute_else_the_copy() -> None:
    scheduled = body(etl_run_id=None)
    assert describe(letter("90", scheduled, run_id="nightly-2024-05-01")).run_id == "nightly-2024-05-01"
    # the original message id is not carried by Pub/Sub: the copy's id is the best there is
    assert describe(letter("90", scheduled)).run_id == "msg-90"
    assert describe(letter("91", b"not json")).run_id == "msg-91"
    assert describe(letter("92", {"etl_run_id": 5, "source_type": "oracle"})).run_id == "etl-run-5"


def test_replayed_attributes_drop_dead_letter_ones_and_count_on() -> None:
    item = describe(letter("90", body(etl_run_id=None), message_type="etl-run-requested",
                           run_id="msg-17", replay_count="1", prior_attempts="5"))
    attributes = replay_attributes(item)
    assert attributes == {"message_type": "etl-run-requested", "run_id": "msg-17", "replay_of": "90",
                          "replay_count": "2", "prior_attempts": "10"}
    # the worker numbers the next delivery after all earlier ones, so event ids never repeat
    assert Delivery(b"", "new", attributes, delivery_attempt=1).attempt == 11


def test_without_a_selection_nothing_is_replayed_and_everything_stays() -> None:
    code, out, queue, publisher = replay([letter("1", body()), letter("2", body())], Selection())
    assert code == 0 and not publisher.published
    assert queue.log == [("release", "1"), ("release", "2")]
    assert "nothing replayed" in out and "etl-run-11" in out


def test_selected_ones_are_republished_then_acked_the_rest_released() -> None:
    letters = [letter("1", body(etl_run_id=1)), letter("2", body(etl_run_id=2, data_source_id=8)),
               letter("3", body(etl_run_id=3))]
    code, out, queue, publisher = replay(letters, Selection(data_source_ids=frozenset({7})))
    assert code == 0
    assert queue.log == [("release", "2"), ("publish", "1"), ("ack", "1"), ("publish", "3"), ("ack", "3")]
    assert [p[0] for p in publisher.published] == [letters[0].data, letters[2].data]  # data untouched
    assert "replayed as new-1" in out and "keep" in out and "2 replayed" in out


def test_run_id_and_limit_select() -> None:
    letters = [letter(str(i), body(etl_run_id=i)) for i in range(1, 5)]
    _, _, _, publisher = replay(letters, Selection(run_ids=frozenset({"etl-run-2", "etl-run-4"})))
    assert [p[1]["replay_of"] for p in publisher.published] == ["2", "4"]
    _, _, _, publisher = replay(letters, Selection(everything=True, limit=3))
    assert [p[1]["replay_of"] for p in publisher.published] == ["1", "2", "3"]


def test_dry_run_changes_nothing() -> None:
    code, out, queue, publisher = replay([letter("1", body())], Selection(everything=True), dry_run=True)
    assert code == 0 and not publisher.published and queue.log == [("release", "1")]
    assert "would replay" in out and "dry run: 1 would be replayed" in out


def test_unconfirmed_republish_is_not_acked_and_fails_the_command() -> None:
    letters = [letter("1", body(etl_run_id=1)), letter("2", body(etl_run_id=2))]
    code, out, queue, _ = replay(letters, Selection(everything=True), fail_for={"1"})
    assert code == 1
    assert ("ack", "1") not in queue.log and ("ack", "2") in queue.log
    assert "FAILED: TimeoutError" in out


def test_output_never_shows_the_password_even_of_an_invalid_request() -> None:
    broken = body(load_type="sideways", dest_table_name=f"x{SECRET}")
    _, out, _, _ = replay([letter("1", body()), letter("2", broken)], Selection(everything=True))
    assert SECRET not in out
    assert "(invalid request)" in out


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (600, "10m"), (3 * 3600 + 300, "3h05m"),
                                               (3 * 86400 + 7200, "3d02h")])
def test_age_is_short(seconds: int, text: str) -> None:
    assert format_age(timedelta(seconds=seconds)) == text


def test_a_selection_that_matches_nothing_exits_3_so_a_script_can_try_again() -> None:
    missing = Selection(run_ids=frozenset({"etl-run-999"}))
    code, out, _queue, publisher = replay([letter("90", body())], missing)
    assert code == 3 and publisher.published == [] and "1 dead-lettered request(s); 0 replayed" in out
    assert replay([], Selection(everything=True))[0] == 0  # --all over an empty topic is not a miss


def test_json_output_has_one_object_per_dead_letter_and_a_summary() -> None:
    queue = FakeQueue([letter("90", body()), letter("91", body(etl_run_id=12))])
    out = io.StringIO()
    code = run_replay(queue, FakePublisher(queue), Selection(run_ids=frozenset({"etl-run-12"})),
                      dry_run=False, out=out, as_json=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and [line.get("dead_letter") for line in lines[:2]] == ["90", "91"]
    assert [line["action"] for line in lines[:2]] == ["keep", "replayed as new-91"]
    assert lines[2] == {"summary": "2 dead-lettered request(s); 1 replayed"}
    assert SECRET not in out.getvalue()
