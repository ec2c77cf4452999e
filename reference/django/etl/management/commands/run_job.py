"""`manage.py run_job JOB_ID`: Run Now from the command line."""

from __future__ import annotations

from typing import Any

from etl.management.commands._job_command import JobCommand
from etl.publisher import request_run


class Command(JobCommand):
    help = "Queue a run of a job and publish its request (on commit, or via the outbox)."

    def handle(self, *args: Any, **options: Any) -> None:
        run = self.for_job(options, request_run)
        self.stdout.write(f"{run.run_id} queued")
