"""What every handler gets (a Delivery) and returns (an Outcome): the transport stays outside."""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from worker.constants import ATTR_PRIOR_ATTEMPTS

_MAX_COUNT_DIGITS = 6


class Outcome(enum.Enum):
    ACK = "ack"  # the outcome is durable: done, or failed for good and reported
    NACK = "nack"  # try again later (Pub/Sub retry policy, then the dead-letter topic)


@dataclass(frozen=True)
class Delivery:
    data: bytes
    message_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    delivery_attempt: int | None = None  # set by Pub/Sub when the subscription has a dead-letter policy
    publish_time: datetime | None = None

    @property
    def attempt(self) -> int:
        """This delivery's number among all deliveries of the run: a replayed request carries the
        count of its earlier deliveries (`prior_attempts`), so event ids never repeat after a replay."""
        return prior_attempts(self.attributes) + (self.delivery_attempt or 1)


def prior_attempts(attributes: Mapping[str, str]) -> int:
    """The `prior_attempts` attribute set by `etl-worker replay`; 0 when absent or not a count."""
    text = attributes.get(ATTR_PRIOR_ATTEMPTS, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= _MAX_COUNT_DIGITS else 0


@dataclass(frozen=True)
class Redelivery:
    """What Pub/Sub does with a nacked message, as far as the worker knows its subscription."""

    redelivers: bool = True  # False: no transport behind the delivery (the one-shot `run`)
    max_delivery_attempts: int | None = None  # the dead-letter policy's; None: no policy, no limit
    dead_letter_topic: str | None = None

    def is_last(self, delivery: Delivery) -> bool:
        """No other delivery follows a nack of this one (it goes to the dead-letter topic, or
        nowhere). Pub/Sub counts `delivery_attempt` only under a dead-letter policy."""
        if not self.redelivers:
            return True
        if self.max_delivery_attempts is None or delivery.delivery_attempt is None:
            return False
        return delivery.delivery_attempt >= self.max_delivery_attempts


class Handler(Protocol):
    def handle(self, delivery: Delivery, interrupt: threading.Event) -> Outcome:
        """Process one delivery; never raise. `interrupt` is set when the worker must stop."""
        ...
