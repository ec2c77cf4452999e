"""Schedule files for the tests (SQLite sources need no password)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


def items_source(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, at DATETIME)")
        conn.executemany("INSERT INTO items VALUES (?, ?, ?)",
                         [(i, f"item {i}", f"2024-01-0{1 + i % 5} 10:00:00") for i in range(12)])
    return path


def item_request(database: Path, **overrides: Any) -> dict[str, Any]:
    return {"data_source_id": 3, "source_type": "sqlite", "connection_params": {"database": str(database)},
            "source_table_name": "items", "dest_table_name": "items", "load_type": "catalog",
            "context": {"schedule": "items-every-5-minutes"}, **overrides}


def write_toml(path: Path, jobs: list[dict[str, Any]]) -> Path:
    """TOML by hand (tomllib only reads): inline tables for the request."""
    lines = []
    for job in jobs:
        lines.append("[[jobs]]")
        for key, value in job.items():
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)
