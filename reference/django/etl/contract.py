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
MAX_IDENTIFIER_CHARS = 128
MAX_CONTEXT_CHARS = 4096
_BQ_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PASSWORD_FIELDS = ("password", "password_env", "password_file", "password_secret")
_WINDOWED = ("transactional", "merge")
_MERGE_ONLY = ("primary_key", "soft_delete_column", "reconcile_deletes")
_IDENTIFIERS = ("schema_name", "source_table_name", "timestamp_column", "soft_delete_column")
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
    """What the worker refuses that `schemas/etl-run-requested.json` does not say (its model
    validators). Kept in step with docs/events.md by hand: the JSON Schema cannot carry them."""
    problems = []
    load_type = body["load_type"]
    windowed = load_type in _WINDOWED
    if windowed and not body.get("timestamp_column"):
        problems.append(f"{load_type} loads need timestamp_column")
    if body["source_type"] != "sqlite" and not body["connection_params"].get("host"):
        problems.append(f"{body['source_type']} sources need connection_params.host")
    given = [name for name in _PASSWORD_FIELDS if body["connection_params"].get(name) is not None]
    if len(given) > 1:
        problems.append(f"at most one of {', '.join(_PASSWORD_FIELDS)}")
    misplaced = [name for name in _MERGE_ONLY if body.get(name) not in (None, False)]
    if misplaced and load_type != "merge":
        problems.append(f"{', '.join(misplaced)} only apply to merge loads")
    problems += _identifier_problems(body)
    problems += _column_problems(body, windowed)
    if not _BQ_TABLE.match(body["dest_table_name"]) or body["dest_table_name"].startswith("_etl_"):
        problems.append("dest_table_name must match [A-Za-z_][A-Za-z0-9_]* and not start with _etl_")
    context = body.get("context")
    # The worker measures the compact JSON text in characters.
    if context is not None and len(json.dumps(context, separators=(",", ":"))) > MAX_CONTEXT_CHARS:
        problems.append(f"context must be at most {MAX_CONTEXT_CHARS} characters as JSON")
    return problems


def _identifier_problems(body: dict[str, Any]) -> list[str]:
    names = [(key, body.get(key)) for key in _IDENTIFIERS]
    for key in ("selected_columns", "primary_key"):
        names += [(key, name) for name in body.get(key) or ()]
    return [f"{key}: {name!r} must have 1..{MAX_IDENTIFIER_CHARS} characters and no control characters"
            for key, name in names
            if name is not None and (not 0 < len(name) <= MAX_IDENTIFIER_CHARS or _CONTROL.search(name))]


def _column_problems(body: dict[str, Any], windowed: bool) -> list[str]:
    problems = [f"{key} must not repeat a column" for key in ("selected_columns", "primary_key")
                if body.get(key) and len(set(body[key])) != len(body[key])]
    selected = body.get("selected_columns")
    if selected:
        needed = [body.get("timestamp_column") if windowed else None, *(body.get("primary_key") or ()),
                  body.get("soft_delete_column")]
        missing = [name for name in needed if name and name not in selected]
        if missing:
            problems.append(f"selected_columns must include {', '.join(missing)}")
    return problems


@functools.cache
def _tolerant(directory: str, name: str) -> dict[str, Any]:
    """The event's schema with `additionalProperties: false` lifted everywhere: the shipped schemas
    forbid unknown fields, the documented contract adds optional ones freely."""
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
