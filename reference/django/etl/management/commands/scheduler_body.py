"""`manage.py scheduler_body JOB_ID`: the static message body for Cloud Scheduler."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from etl.contract import InvalidRequest
from etl.models import Job
from etl.request_builder import scheduler_body


class Command(BaseCommand):
    help = ("Print the request body for `gcloud scheduler jobs create pubsub ... --message-body-from-file`: "
            "no etl_run_id (each firing is its own run), the job in context (consume_events adopts it).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        job = Job.objects.filter(pk=options["job_id"]).first()
        if job is None:
            raise CommandError(f"no job {options['job_id']}")
        try:
            body = scheduler_body(job)
        except InvalidRequest as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(body, indent=2))
