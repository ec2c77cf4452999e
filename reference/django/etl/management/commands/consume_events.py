"""`manage.py consume_events`: apply the worker's events to Runs (forever, or bounded)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from etl.consumer import EventConsumer


class Command(BaseCommand):
    help = ("Create the ordered events subscription if missing, then apply events as they arrive: one "
            "transaction per event, acked after the commit. Runs until stopped unless bounded.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--subscription", help="default: settings.ETL['EVENTS_SUBSCRIPTION']")
        parser.add_argument("--setup-only", action="store_true",
                            help="create the subscription (and topic) and exit")
        parser.add_argument("--max-messages", type=int, help="exit after handling this many messages")
        parser.add_argument("--max-seconds", type=float, help="exit after this long")
        parser.add_argument("--idle-seconds", type=float, help="exit after this long without a message")

    def handle(self, *args: Any, **options: Any) -> None:
        consumer = EventConsumer(options["subscription"])
        if options["setup_only"]:
            self.stdout.write(f"subscription ready: {consumer.path}")
            consumer.close()
            return
        stop = threading.Event()
        with _stop_on_signals(stop), consumer:
            totals = consumer.process(
                until=stop.is_set, max_messages=options["max_messages"],
                max_seconds=options["max_seconds"], idle_seconds=options["idle_seconds"])
        self.stdout.write(f"{totals.messages} message(s): {totals.applied} applied, {totals.duplicates} "
                          f"duplicate(s), {totals.adopted} run(s) adopted, {totals.rejected} rejected, "
                          f"{totals.errors} error(s) (redelivered)")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT finish the event in hand, then exit; the previous handlers come back after
    (call_command from a test or a script must not keep ours). Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
