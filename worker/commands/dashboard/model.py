"""The dashboard's data, as pure functions: live runs folded from events, the history summarised.

`LiveBoard` folds run events (deduplicated, stale ones ignored: `watch`'s rules) into one line per
run, with the progress `fraction` and `rows_expected` that `run.started`/`run.progress` carry.
`snapshot` makes the JSON served at `/api/runs` from the board and the run history's records.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from worker import constants as c
from worker.commands.runs import TableHealth, summarise
from worker.commands.watch import RunLine, apply
from worker.history import RunRecord

ACTIVE_TTL = timedelta(hours=1)  # a live run with no event for this long is dropped (its worker died)
ENDED_KEPT = 10
MAX_LINES = 500  # runs remembered; past it the oldest ended ones are forgotten
MAX_SEEN = 100_000  # event ids remembered for deduplication (stale events are ignored anyway)
RECENT_SHOWN = 50
TREND_POINTS = 30


@dataclass(frozen=True)
class Progress:
    rows_expected: int | None = None
    fraction: float | None = None
    data_source_id: int | None = None
    dest_table: str | None = None
    last_event_at: datetime | None = None


class LiveBoard:
    """Run lines from the events topic (thread-safe: the subscriber adds, the server reads)."""

    def __init__(self) -> None:
        self._lines: dict[str, RunLine] = {}
        self._progress: dict[str, Progress] = {}
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest ids are forgotten first
        self._lock = threading.Lock()

    def add(self, event: Mapping[str, Any]) -> None:
        try:
            event_id, run_id = str(event["event_id"]), str(event["run_id"])
        except KeyError:
            return
        with self._lock:
            if event_id in self._seen:
                return
            self._seen[event_id] = None
            if len(self._seen) > MAX_SEEN:
                del self._seen[next(iter(self._seen))]
            try:
                line = self._apply(self._lines.get(run_id), event)
            except (KeyError, TypeError, ValueError):
                return  # not one of ours
            if line is not None:
                self._lines[run_id] = line
                self._progress[run_id] = _progress(self._progress.get(run_id, Progress()), event)
                self._forget_old()

    def _forget_old(self) -> None:
        if len(self._lines) <= MAX_LINES:
            return
        ended = sorted((line for line in self._lines.values() if line.ended), key=lambda line: line.appeared)
        for line in ended[:len(self._lines) - MAX_LINES]:
            del self._lines[line.run_id], self._progress[line.run_id]

    def _apply(self, line: RunLine | None, event: Mapping[str, Any]) -> RunLine | None:
        kind = event["event_type"]
        if kind == c.RUN_DEAD_LETTERED:
            return None if line is None else replace(line, phase="failed", outcome="✗ dead-lettered")
        if kind == c.RUN_REPLAYED:
            return None
        return apply(line, event, len(self._lines))

    def rows(self, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(active runs, the latest ended ones), as JSON-ready dicts."""
        with self._lock:
            lines = sorted(self._lines.values(), key=lambda line: line.appeared)
            progress = dict(self._progress)
        fresh = [line for line in lines
                 if (progress[line.run_id].last_event_at or now) >= now - ACTIVE_TTL or line.ended]
        active = [_live_row(line, progress[line.run_id], now) for line in fresh if not line.ended]
        ended = [_live_row(line, progress[line.run_id], now) for line in fresh if line.ended]
        return active, ended[-ENDED_KEPT:][::-1]


def _progress(before: Progress, event: Mapping[str, Any]) -> Progress:
    expected = event.get("rows_expected", before.rows_expected)
    fraction = event.get("fraction") if event["event_type"] == c.RUN_PROGRESS else before.fraction
    if event["event_type"] == c.RUN_STARTED:
        fraction = 0.0 if expected else None
    if event["event_type"] == c.RUN_COMPLETED:
        fraction = 1.0
    return Progress(rows_expected=expected, fraction=fraction,
                    data_source_id=event.get("data_source_id", before.data_source_id),
                    dest_table=event.get("dest_table") or before.dest_table,
                    last_event_at=datetime.fromisoformat(str(event["occurred_at"])))


def _live_row(line: RunLine, progress: Progress, now: datetime) -> dict[str, Any]:
    elapsed = line.elapsed_s(now)
    return {
        "run_id": line.run_id, "table": line.table, "dest_table": progress.dest_table,
        "data_source_id": progress.data_source_id, "phase": line.phase, "attempt": line.attempt,
        "rows": line.rows, "rows_expected": progress.rows_expected, "fraction": progress.fraction,
        "elapsed_s": round(elapsed, 1), "rows_per_s": round(line.rows / elapsed) if elapsed > 0 else None,
        "outcome": line.outcome,
    }


# --- history ---------------------------------------------------------------------------------------
def snapshot(board: LiveBoard, records: Sequence[RunRecord], since: datetime, now: datetime,
             history_error: str | None = None) -> dict[str, Any]:
    """Everything the page shows, as one JSON document."""
    active, ended = board.rows(now)
    health = summarise(records, since, now)
    finished = [r for r in records if r.outcome in ("committed", "failed", "dead-lettered")]
    committed = [r for r in records if r.outcome == "committed"]
    newest = sorted(records, key=lambda r: r.last_at, reverse=True)
    return {
        "generated_at": now.isoformat(), "since": since.isoformat(), "history_error": history_error,
        "active": active, "ended": ended,
        "totals": {"runs": len(records), "committed": len(committed),
                   "failed": len(finished) - len(committed),
                   "success_rate": len(committed) / len(finished) if finished else None,
                   "rows": sum(r.rows_loaded for r in committed)},
        "daily": daily(records, since, now),
        "tables": [_table_row(h, records) for h in health],
        "recent": [_record_row(r) for r in newest[:RECENT_SHOWN]],
    }


def daily(records: Sequence[RunRecord], since: datetime, now: datetime) -> list[dict[str, Any]]:
    """One entry per UTC day of the period, oldest first: rows committed and runs by outcome."""
    first, last = since.astimezone(UTC).date(), now.astimezone(UTC).date()
    days = {(first + timedelta(days=i)).isoformat(): {"rows": 0, "committed": 0, "failed": 0,
                                                      "dead-lettered": 0, "other": 0}
            for i in range((last - first).days + 1)}
    for record in records:
        day = days.get(_utc(record.last_at).date().isoformat())
        if day is None:
            continue
        key = record.outcome if record.outcome in ("committed", "failed", "dead-lettered") else "other"
        day[key] += 1
        if record.outcome == "committed":
            day["rows"] += record.rows_loaded
    return [{"day": day, **counts} for day, counts in days.items()]


def _table_row(health: TableHealth, records: Sequence[RunRecord]) -> dict[str, Any]:
    mine = sorted((r for r in records if (r.data_source_id, r.dest_table) ==
                   (health.data_source_id, health.dest_table)), key=lambda r: r.last_at)
    done = [r for r in mine if r.outcome == "committed"][-TREND_POINTS:]
    durations = [{"at": _utc(r.last_at).isoformat(), "seconds": r.duration_seconds} for r in done]
    row = asdict(health)
    row["last_success"] = _utc(health.last_success).isoformat() if health.last_success else None
    row["durations"] = durations
    row["trend"] = _trend([r.duration_seconds for r in done])
    return row


def _trend(seconds: list[float]) -> str | None:
    """'slower', 'faster' or 'steady': the newest half's median against the older half's."""
    if len(seconds) < 4:
        return None
    half = len(seconds) // 2
    old, new = statistics.median(seconds[:half]), statistics.median(seconds[half:])
    if old <= 0:
        return None
    ratio = new / old
    return "slower" if ratio > 1.25 else "faster" if ratio < 0.8 else "steady"


def _record_row(record: RunRecord) -> dict[str, Any]:
    row = asdict(record)
    row["last_at"] = _utc(record.last_at).isoformat()
    return row


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
