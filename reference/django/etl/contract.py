"""The contract, read from the worker's `schemas/` (JSON Schema files, never the worker's code).

Requests are checked against `etl-run-requested.json` before they are published, plus the rules
that file cannot express but the worker enforces (docs/events.md: an invalid request is a permanent
`run.failed`, so refusing it here is kinder). Events are checked against their schema tolerantly:
docs/events.md says events gain optional fields without a version change, so unknown fields pass.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from etl.conf import etl_setting

REQUEST_SCHEMA = "etl-run-requested"
MAX_CONTEXT_CHARS = 4096
_WINDOWED = ("transactional", "merge")
_EVENT_TYPE = re.compile(r"^run\.[a-z_]{1,40}$")  # also keeps a hostile type from naming a path


class InvalidRequest(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid etl-run-requested: " + "; ".join(problems))
        self.problems = problems


def schemas_dir() -> Path:
    configured = etl_setting("SCHEMAS_DIR")
    if not configured:
        raise RuntimeError("settings.ETL['SCHEMAS_DIR'] must name a copy of the worker's schemas/")
    return Path(configured)


@functools.cache
def _load(directory: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((Path(directory) / f"{name}.json").read_text())
    return loaded


def load_schema(name: str) -> dict[str, Any]:
    return _load(str(schemas_dir()), name)


def validate_request(body: dict[str, Any]) -> None:
    """Raise InvalidRequest listing every problem: the schema's, then the worker's other rules."""
    validator = Draft202012Validator(load_schema(REQUEST_SCHEMA))
    problems = [f"{'.'.join(map(str, e.absolute_path)) or 'body'}: {e.message}"
                for e in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path)))]
    if not problems:
        problems = worker_rules(body)
    if problems:
        raise InvalidRequest(problems)


def worker_rules(body: dict[str, Any]) -> list[str]:
    """What the worker refuses that `schemas/etl-run-requested.json` cannot say: the columns
    selected_columns must include, and the context's size (the worker counts the characters of its
    compact JSON). Everything else the schema itself says."""
    problems = []
    selected = body.get("selected_columns")
    if selected:
        windowed = body["load_type"] in _WINDOWED
        needed = [body.get("timestamp_column") if windowed else None, *(body.get("primary_key") or ()),
                  body.get("soft_delete_column")]
        missing = [name for name in needed if name and name not in selected]
        if missing:
            problems.append(f"selected_columns must include {', '.join(missing)}")
    context = body.get("context")
    if context is not None and len(json.dumps(context, separators=(",", ":"))) > MAX_CONTEXT_CHARS:
        problems.append(f"context must be at most {MAX_CONTEXT_CHARS} characters as JSON")
    return problems


@functools.cache
def _tolerant(directory: str, name: str) -> dict[str, Any]:
    """The event's schema with any `additionalProperties: false` lifted: today's schemas admit unknown
    fields already, but a copy made before they did forbids them, and events gain optional fields."""
    schema = copy.deepcopy(_load(directory, name))

    def lift(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("additionalProperties") is False:
                node.pop("additionalProperties")
            for value in node.values():
                lift(value)
        elif isinstance(node, list):
            for value in node:
                lift(value)

    lift(schema)
    return schema


def event_problems(event: Any) -> list[str]:
    """Empty when the event is one we can apply; an unknown event type is not a problem (ignored)."""
    if not isinstance(event, dict) or not _EVENT_TYPE.match(str(event.get("event_type"))):
        return ["not an event object"]
    path = schemas_dir() / f"{event['event_type']}.json"
    if not path.exists():
        return []
    validator = Draft202012Validator(_tolerant(str(schemas_dir()), event["event_type"]))
    return [f"{'.'.join(map(str, e.absolute_path)) or 'event'}: {e.message}"
            for e in validator.iter_errors(event)]
