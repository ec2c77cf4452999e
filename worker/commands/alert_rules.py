"""`etl-worker notify`'s rules file: which events alert, beyond the defaults.

TOML or JSON (both read by the standard library; no YAML dependency for a file of a few lines):

```toml
permanent_failure = true    # default: a run.failed that no delivery will follow (will_retry false)
dead_lettered = true        # default: run.dead_lettered

[[rules]]
kind = "consecutive_failures"   # N failed deliveries in a row, no run.completed between
count = 3
per = "table"                   # or "data_source": any table of the source counts
data_source_id = 7              # optional filters, on every kind: data_source_id, dest_table

[[rules]]
kind = "quality_warning"        # run.completed with quality.violations or warnings

[[rules]]
kind = "slow_run"               # run.progress / run.completed past `seconds` (duration_seconds)
seconds = 900
dest_table = ["orders", "customers"]
```
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RulesFileError(ValueError):
    """The rules file cannot be read or is not valid (one line for the terminal)."""


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    data_source_id: int | list[int] | None = Field(None, description="Only these data sources.")
    dest_table: str | list[str] | None = Field(None, description="Only these destination tables.")

    def matches(self, data_source_id: int | None, dest_table: str | None) -> bool:
        return _within(data_source_id, self.data_source_id) and _within(dest_table, self.dest_table)


class ConsecutiveFailures(_Rule):
    kind: Literal["consecutive_failures"]
    count: int = Field(..., ge=1, le=1000)
    per: Literal["table", "data_source"] = "table"


class QualityWarning(_Rule):
    kind: Literal["quality_warning"]


class SlowRun(_Rule):
    kind: Literal["slow_run"]
    seconds: float = Field(..., gt=0)


Rule = Annotated[ConsecutiveFailures | QualityWarning | SlowRun, Field(discriminator="kind")]


class Rules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    permanent_failure: bool = True
    dead_lettered: bool = True
    rules: list[Rule] = Field(default_factory=list, max_length=1000)

    def first(self, kind: type[_Rule], data_source_id: int | None, dest_table: str | None) -> Any:
        """The first rule of `kind` that applies to the table, or None."""
        return next((r for r in self.of(kind) if r.matches(data_source_id, dest_table)), None)

    def of(self, kind: type[_Rule]) -> list[Any]:
        return [rule for rule in self.rules if isinstance(rule, kind)]


def _within(value: Any, allowed: Any) -> bool:
    if allowed is None:
        return True
    return value in allowed if isinstance(allowed, list) else value == allowed


def load_rules(path: str | Path | None) -> Rules:
    """The rules in `path` (`.toml` or `.json`); the defaults when there is none."""
    if path is None:
        return Rules()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        return Rules.model_validate(data)
    except OSError as exc:
        raise RulesFileError(f"cannot read rules file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RulesFileError(f"rules file {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                             f"{exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False)[:5])
        raise RulesFileError(f"rules file {path}: {problems}") from None
