"""What the job commands share: one argument, the job, and its request built or a CommandError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from etl.contract import InvalidRequest
from etl.models import Job

T = TypeVar("T")


class JobCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=int)

    def for_job(self, options: dict[str, Any], build: Callable[[Job], T]) -> T:
        """`build(job)` for the job named on the command line; a missing job or a request the
        contract refuses is a CommandError (exit 1, the reason on stderr)."""
        job = Job.objects.filter(pk=options["job_id"]).first()
        if job is None:
            raise CommandError(f"no job {options['job_id']}")
        try:
            return build(job)
        except InvalidRequest as exc:
            raise CommandError(str(exc)) from None
