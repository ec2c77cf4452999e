"""`manage.py publish_outbox`: send the requests waiting in the outbox (PUBLISH_MODE = "outbox")."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from etl.publisher import publish_outbox


class Command(BaseCommand):
    help = "Publish unpublished OutboxMessage rows, oldest first (once, or every --interval seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, help="at most this many per pass")
        parser.add_argument("--interval", type=float, help="keep going, a pass every this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        pause = threading.Event()  # never set: a sleep that an interrupt can end
        while True:
            published, failed = publish_outbox(options["limit"])
            self.stdout.write(f"{published} published, {failed} failed (left for the next pass)")
            if options["interval"] is None:
                return
            pause.wait(options["interval"])
