"""How one event changes a Run (docs/events.md, "The states of a run"). No database access here:
etl/apply.py locks the rows, calls these and saves.

- An event is applied only if its (attempt, seq) is newer than the last one applied, so repeats and
  late arrivals change nothing; `run.completed` always wins and nothing moves a completed run back.
- `run.replayed` is ordered AFTER every event of the attempt it names (see `order_key`).
- The job's watermark moves only from `run.completed`, and only forward by `watermark_key`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from etl.models import Job, Run, RunState

# WORKAROUND (contract gap, reported): run.replayed carries attempt = the attempts so far and seq 1,
# so by (attempt, seq) it sorts BEFORE that attempt's run.failed / run.dead_lettered (seq 1, 2) and
# a literal reading of the ordering rule would never show "replayed". It happens after all of them
# and before the next attempt's events, so it gets the last seq of its attempt.
AFTER_ATTEMPT = 2**62
ERROR_FIELDS = ("error_type", "error_message", "error_retryable", "will_retry", "dead_letter_topic")


def order_key(event: dict[str, Any]) -> tuple[int, int]:
    if event["event_type"] == "run.replayed":
        return int(event["attempt"]), AFTER_ATTEMPT
    return int(event["attempt"]), int(event["seq"])


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 with `Z` (docs/events.md "Time formats"); Python 3.11 reads it."""
    return datetime.fromisoformat(text) if text else None


def apply_event(run: Run, event: dict[str, Any]) -> bool:
    """Apply `event` to `run` in memory; True if the run changed (the caller saves it)."""
    kind = event["event_type"]
    replays = run.replay_count
    if kind == "run.replayed":  # counted even when late: how often it was replayed is a fact
        run.replay_count = max(run.replay_count, int(event["replay_count"]))
    if kind == "run.completed":
        _completed(run, event)
        return True
    if run.state == RunState.COMPLETED or order_key(event) <= (run.attempt, run.seq):
        return run.replay_count != replays
    handler = _HANDLERS.get(kind)
    if handler is None:  # a type this version does not know: the contract says ignore it
        return False
    _mark(run, event)
    handler(run, event)
    return True


def _mark(run: Run, event: dict[str, Any]) -> None:
    run.attempt, run.seq = order_key(event)
    run.last_event_type = event["event_type"]
    run.last_event_at = parse_time(event["occurred_at"])
    if run.context is None:
        run.context = event.get("context")
    if event["event_type"] != "run.replayed":  # a replay has no counters of its own (all zero)
        for name in ("rows_extracted", "rows_loaded", "batches_loaded", "duration_seconds"):
            setattr(run, name, event.get(name, getattr(run, name)))


def _started(run: Run, event: dict[str, Any]) -> None:
    run.state = RunState.RUNNING
    run.phase = "started"
    run.rows_expected = event.get("rows_expected")
    run.fraction = 0.0 if run.rows_expected else None
    run.window_low = event.get("window_low")


def _progress(run: Run, event: dict[str, Any]) -> None:
    run.state = RunState.RUNNING
    run.phase = event.get("phase", "")
    run.rows_expected = event.get("rows_expected", run.rows_expected)
    run.fraction = event.get("fraction")


def _failed(run: Run, event: dict[str, Any]) -> None:
    run.state = RunState.RETRYING if event["will_retry"] else RunState.FAILED
    run.will_retry = bool(event["will_retry"])
    _error(run, event)


def _dead_lettered(run: Run, event: dict[str, Any]) -> None:
    run.state = RunState.DEAD_LETTERED
    run.will_retry = False
    run.dead_letter_topic = event.get("dead_letter_topic", "")
    _error(run, event)


def _replayed(run: Run, event: dict[str, Any]) -> None:
    run.state = RunState.REPLAYED
    run.will_retry = None


def _error(run: Run, event: dict[str, Any]) -> None:
    error = event.get("error") or {}
    run.error_type = str(error.get("type", ""))[:200]
    run.error_message = str(error.get("message", ""))
    run.error_retryable = error.get("retryable")


def _completed(run: Run, event: dict[str, Any]) -> None:
    """Everything a completed run shows comes from run.completed (the same event on every repeat),
    so the final state does not depend on which other events arrived, or in which order."""
    key = order_key(event)
    run.attempt, run.seq = max(key, (run.attempt, run.seq))
    run.last_event_type = event["event_type"]
    run.last_event_at = parse_time(event["occurred_at"])
    run.state = RunState.COMPLETED
    run.phase = ""
    run.fraction = 1.0
    for name in ("rows_extracted", "rows_loaded", "batches_loaded", "duration_seconds", "source_row_count",
                 "window_low", "window_high", "watermark", "watermark_key"):
        setattr(run, name, event.get(name))
    run.committed_at = parse_time(event.get("committed_at"))
    run.values_nulled = event.get("values_nulled") or {}
    run.warnings = event.get("warnings") or []
    run.error_type = run.error_message = run.dead_letter_topic = ""
    run.error_retryable = run.will_retry = None
    if run.context is None:
        run.context = event.get("context")


_HANDLERS = {
    "run.started": _started,
    "run.progress": _progress,
    "run.failed": _failed,
    "run.dead_lettered": _dead_lettered,
    "run.replayed": _replayed,
}


def advance_watermark(job: Job, event: dict[str, Any]) -> bool:
    """Store a committed watermark on the job if it is newer than the job's (by watermark_key,
    compared as plain Python strings: code point order, never the database's collation)."""
    watermark, key = event.get("watermark"), event.get("watermark_key")
    if event["event_type"] != "run.completed" or watermark is None or key is None:
        return False
    if event.get("dest_table") != job.dest_table:  # a window belongs to its destination table
        return False
    if job.last_sync_key is not None and key <= job.last_sync_key:
        return False
    job.last_sync_value, job.last_sync_key = watermark, key
    return True
