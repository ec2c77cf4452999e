"""`manage.py run_job JOB_ID`: Run Now from the command line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from etl.contract import InvalidRequest
from etl.models import Job
from etl.publisher import request_run


class Command(BaseCommand):
    help = "Queue a run of a job and publish its request (on commit, or via the outbox)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        job = Job.objects.filter(pk=options["job_id"]).first()
        if job is None:
            raise CommandError(f"no job {options['job_id']}")
        try:
            run = request_run(job)
        except InvalidRequest as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{run.run_id} queued")
