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


class Handler(Protocol):
    def handle(self, delivery: Delivery, interrupt: threading.Event) -> Outcome:
        """Process one delivery; never raise. `interrupt` is set when the worker must stop."""
        ...
