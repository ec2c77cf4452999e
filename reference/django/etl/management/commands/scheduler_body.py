"""`manage.py scheduler_body JOB_ID`: the static message body for Cloud Scheduler."""

from __future__ import annotations

import json
from typing import Any

from etl.management.commands._job_command import JobCommand
from etl.request_builder import scheduler_body


class Command(JobCommand):
    help = ("Print the request body for `gcloud scheduler jobs create pubsub ... --message-body-from-file`: "
            "no etl_run_id (each firing is its own run), the job in context (consume_events adopts it).")

    def handle(self, *args: Any, **options: Any) -> None:
        body = self.for_job(options, scheduler_body)
        self.stdout.write(json.dumps(body, indent=2))
