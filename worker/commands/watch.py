"""`etl-worker watch`: every active run as a live line (table, phase, rows, rows/s, elapsed, outcome).

It reads the events topic through a subscription of its own (unique name, deleted on exit, and
expiring after a day of disuse should the process die first), so it never takes events from Django.

The screen is a pure function of the events seen: `RunBoard.add` folds events into one `RunLine`
per run (deduplicated on `event_id`, stale ones ignored by (attempt, seq)) and `render` draws the
board at a given time. `--run-id` follows one run and exits once it has completed or failed for
good; a retryable failure shows as "retrying" (Pub/Sub will deliver the request again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message
from google.protobuf import duration_pb2
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table
from rich.text import Text

from worker import constants as c
from worker.commands.event_feed import create_events_subscription
from worker.messages import utcnow
from worker.settings import Settings

log = logging.getLogger(__name__)
REFRESH_S = 0.25
SUBSCRIPTION_TTL_S = 86_400  # Pub/Sub's minimum: a watch killed with SIGKILL leaves it one day
RETENTION_S = 600  # Pub/Sub's minimum
LIVE_PHASES = ("starting", "extracting", "committing")
MAX_ENDED_SHOWN = 10
MAX_TABLE_WIDTH = 40
_STYLES = {"completed": "green", "failed": "bold red", "retrying": "yellow"}


@dataclass(frozen=True)
class RunLine:
    """What the board knows about one run."""

    run_id: str
    table: str
    phase: str  # starting | extracting | committing | retrying | completed | failed
    rows: int
    attempt: int
    seq: int
    started_at: datetime  # start of the current attempt
    duration_s: float  # of the current attempt, as of its latest event
    outcome: str = ""
    appeared: int = 0  # order of first appearance (stable rows)

    @property
    def ended(self) -> bool:
        return self.phase in ("completed", "failed")

    def elapsed_s(self, now: datetime) -> float:
        if self.phase in LIVE_PHASES:
            return max(0.0, (now - self.started_at).total_seconds())
        return self.duration_s


class RunBoard:
    """Folds events into run lines; `run_id` restricts it to one run."""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id
        self._lines: dict[str, RunLine] = {}
        self._seen: set[str] = set()

    @property
    def lines(self) -> list[RunLine]:
        return sorted(self._lines.values(), key=lambda line: line.appeared)

    @property
    def done(self) -> bool:
        """Following one run, and it has ended."""
        line = self._lines.get(self.run_id or "")
        return line is not None and line.ended

    def add(self, event: Mapping[str, Any]) -> None:
        try:
            event_id, run_id = str(event["event_id"]), str(event["run_id"])
        except KeyError:
            return
        if event_id in self._seen or (self.run_id and run_id != self.run_id):
            return
        self._seen.add(event_id)
        try:
            line = apply(self._lines.get(run_id), event, len(self._lines))
        except (KeyError, TypeError, ValueError) as exc:  # not one of ours: skip it
            log.debug("ignoring event %s: %s", event_id, exc)
            return
        if line is not None:
            self._lines[run_id] = line


def fold(events: Iterable[Mapping[str, Any]], run_id: str | None = None) -> RunBoard:
    board = RunBoard(run_id)
    for event in events:
        board.add(event)
    return board


def apply(line: RunLine | None, event: Mapping[str, Any], appeared: int) -> RunLine | None:
    """The run's line after `event`; None when the event is older than what the line shows."""
    kind = event["event_type"]
    attempt, seq = int(event["attempt"]), int(event["seq"])
    if line is not None and _stale(line, kind, (attempt, seq)):
        return None
    occurred = datetime.fromisoformat(str(event["occurred_at"]))
    duration_s = float(event.get("duration_seconds") or 0.0)
    phase, rows, outcome = _phase(event)
    base = line or RunLine(run_id=str(event["run_id"]), table="", phase=phase, rows=0, attempt=attempt,
                           seq=seq, started_at=occurred, duration_s=0.0, appeared=appeared)
    table = _table(event) if event.get("source_table") or not base.table else base.table
    return replace(
        base, table=table, phase=phase, rows=rows, attempt=attempt, seq=seq,
        started_at=occurred - timedelta(seconds=duration_s), duration_s=duration_s, outcome=outcome,
    )


def _stale(line: RunLine, kind: str, order: tuple[int, int]) -> bool:
    """Nothing changes a completed run; a completion (built from the ledger, whatever attempt it
    names) ends any other; anything else must be newer than what the line shows."""
    if line.phase == "completed":
        return True
    if kind == c.RUN_COMPLETED:
        return False
    return line.ended or order <= (line.attempt, line.seq)


def _phase(event: Mapping[str, Any]) -> tuple[str, int, str]:
    kind = event["event_type"]
    if kind == c.RUN_STARTED:
        return "starting", 0, ""
    if kind == c.RUN_PROGRESS:
        return str(event["phase"]), int(event["rows_extracted"]), ""
    if kind == c.RUN_COMPLETED:
        rows = int(event["rows_loaded"])
        watermark = f"; watermark {event['watermark']}" if event.get("watermark") else ""
        return "completed", rows, f"✓ {rows:,} rows committed{watermark}"
    if kind == c.RUN_FAILED:
        error = event["error"]
        text = f"{error['type']}: {str(error['message'])[:100]}"
        if error["retryable"]:
            return "retrying", int(event["rows_extracted"]), f"↻ attempt {event['attempt']} failed: {text}"
        return "failed", int(event["rows_extracted"]), f"✗ {text}"
    raise ValueError(f"unknown event type {kind!r}")


def _table(event: Mapping[str, Any]) -> str:
    """What the event is about: a one-table job's table, or a job's table being read."""
    source, dest = event.get("source_table"), event.get("dest_table") or event.get("table")
    if source and dest:
        return f"{source} → {dest}"
    return str(dest or source or "")


# --- drawing --------------------------------------------------------------------------------------
def render(board: RunBoard, now: datetime, max_ended: int = MAX_ENDED_SHOWN) -> Table:
    """The board at `now`: live runs, then the latest `max_ended` ended ones."""
    lines = board.lines
    ended = [line for line in lines if line.ended][-max_ended:] if max_ended else []
    shown = [line for line in lines if not line.ended or line in ended]
    table = Table(*_columns(), box=box.SIMPLE_HEAD, caption=_caption(board, shown), caption_justify="left")
    for line in shown:
        table.add_row(*_cells(line, now))
    return table


def _cells(line: RunLine, now: datetime) -> tuple[str | Text, ...]:
    elapsed = line.elapsed_s(now)
    rate = f"{line.rows / elapsed:,.0f}" if elapsed > 0 and line.rows else "-"
    style = _STYLES.get(line.phase, "")
    return (line.run_id, _cut(line.table), Text(line.phase, style=style), f"{line.rows:,}", rate,
            format_elapsed(elapsed), _cut(line.outcome, style))


def _cut(text: str, style: str = "") -> Text:
    """One line, cut with an ellipsis when its column is narrower."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _columns() -> list[Column]:
    """Only table and outcome give way on a narrow screen (rich shrinks the wrappable columns);
    their cells are single-line texts, so they are cut with an ellipsis rather than wrapped."""
    return [Column("run", no_wrap=True), Column("table", max_width=MAX_TABLE_WIDTH),
            Column("phase", no_wrap=True),
            *(Column(name, justify="right", no_wrap=True) for name in ("rows", "rows/s", "elapsed")),
            Column("outcome")]


def format_elapsed(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _caption(board: RunBoard, shown: list[RunLine]) -> str:
    live = sum(1 for line in shown if not line.ended)
    if board.run_id:
        return f"following {board.run_id}"
    return f"{live} active run(s)" if shown else "waiting for events…"


# --- the command ----------------------------------------------------------------------------------
def watch(settings: Settings, *, run_id: str | None, console: Console,
          stop: threading.Event | None = None, ready: threading.Event | None = None) -> int:
    """Show the board until interrupted (or, following a run, until it ends)."""
    subscriber = pubsub_v1.SubscriberClient()
    try:
        path = create_subscription(subscriber, settings)
    except gexc.NotFound:
        console.print(f"topic {settings.etl_events_topic} does not exist: run `etl-worker setup` first")
        subscriber.close()
        return 2
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def on_message(message: Message) -> None:
        inbox.put(bytes(message.data))
        message.ack()

    future = subscriber.subscribe(path, on_message)
    board, stop = RunBoard(run_id), stop or threading.Event()
    try:
        if ready is not None:
            ready.set()
        _show(board, inbox, console, stop)
    except KeyboardInterrupt:
        pass
    finally:
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=5)
        delete_subscription(subscriber, path)
    return 0


def _show(board: RunBoard, inbox: queue.SimpleQueue[bytes], console: Console, stop: threading.Event) -> None:
    with Live(render(board, utcnow()), console=console, auto_refresh=False) as live:
        while not board.done and not stop.wait(REFRESH_S):
            _drain(inbox, board)
            live.update(render(board, utcnow()), refresh=True)
        _drain(inbox, board)
        live.update(render(board, utcnow()), refresh=True)


def _drain(inbox: queue.SimpleQueue[bytes], board: RunBoard) -> None:
    while True:
        try:
            data = inbox.get_nowait()
        except queue.Empty:
            return
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            board.add(event)


def create_subscription(subscriber: pubsub_v1.SubscriberClient, settings: Settings) -> str:
    name = f"{settings.etl_events_topic}-watch-{uuid.uuid4().hex[:8]}"
    path = create_events_subscription(
        subscriber, settings, name, RETENTION_S, ack_deadline_seconds=10,
        expiration_policy={"ttl": duration_pb2.Duration(seconds=SUBSCRIPTION_TTL_S)})
    log.info("watching %s through %s", settings.etl_events_topic, path)
    return path


def delete_subscription(subscriber: pubsub_v1.SubscriberClient, path: str) -> None:
    try:
        subscriber.delete_subscription(subscription=path)
    except gexc.GoogleAPIError as exc:
        log.warning("could not delete %s (it expires after a day unused): %s", path, exc)
    finally:
        subscriber.close()
