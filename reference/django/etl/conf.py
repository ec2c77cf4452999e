"""The integration's settings: `settings.ETL[KEY]`, with these defaults."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "GCP_PROJECT_ID": "etl-local",
    "REQUEST_TOPIC": "etl-run-requested",  # = the worker's ETL_REQUEST_TOPIC
    "EVENTS_TOPIC": "etl-run-events",  # = the worker's ETL_EVENTS_TOPIC
    "EVENTS_SUBSCRIPTION": "etl-run-events-django",  # Django's own, ordered; consume_events makes it
    "PUBLISH_MODE": "on_commit",  # "outbox": Run Now writes an OutboxMessage; publish_outbox sends it
    "SCHEMAS_DIR": None,  # where etl-run-requested.json lies (a copy of the worker's schemas/)
    "REPLAY_COMMAND": [],  # argv prefix of the worker CLI, e.g. ["etl-worker"]; empty: show only
    "REPLAY_ENV": {},  # extra environment for it (the worker's GCP_PROJECT_ID, topic names, ...)
    "ENVIRONMENT": None,  # put in every request's context; events of another environment are ignored
}
PUBLISH_MODES = ("on_commit", "outbox")


def etl_setting(name: str) -> Any:
    configured: dict[str, Any] = getattr(settings, "ETL", {})
    return configured.get(name, DEFAULTS[name])
