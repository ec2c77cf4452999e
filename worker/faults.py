"""Fault injection for the crash suite: the worker kills itself (SIGKILL) at a chosen moment.

Inert unless the environment has ETL_FAULT_INJECTION=1 (set only by the test suite): every function
here then returns at once or hands back its argument unchanged. SIGKILL, not an exception: nothing
gets to clean up, exactly as when a Cloud Run instance or a GKE node disappears.

Three ways to choose where the worker dies:
- `ETL_CRASH_AT=<phase>`: a named phase of the run (`PHASES`, `JOB_PHASES`, `CDC_PHASES`,
  `SUB_WINDOW_PHASES`, `CATALOG_CHUNK_PHASES`, `crash_point`);
  `ETL_CRASH_OCCURRENCE=N` (default 1) kills at its N-th passage in the process (a job passes a
  table's points once per table: `table_staged` with N=2 dies between its second and third table).
- `ETL_CRASH_AT=commit_submitted` with `ETL_COMMIT_HOLD_DIR=<dir>`: the commit job is held open on
  the BigQuery emulator and the worker dies while its jobs.insert is outstanding (`hold_commit`).
- `ETL_KILL_AT=<category>:<n>`: the n-th *moment* of a category (the suite's seeded random kills).
  Every BigQuery HTTP request is two moments (about to be sent; answered but not yet returned to
  the caller) and every event publish three (about to be handed to the client; handed, not yet
  confirmed; confirmed). Categories: `job-wait` (polls of load and commit jobs), `ledger-read`
  (queries of the ledger), `staging-drop`, `publish`, and `any` (every moment).
`ETL_FAULT_TRACE=<file>` appends every moment's label to the file (how the suite's bounds were found).
`ETL_FAULT_ACK_FILE=<file>` appends each delivery's ack id, so the suite can hand a killed worker's
lease back (`modify_ack_deadline` 0: the redelivery Pub/Sub makes at lease expiry, attempt + 1) instead
of waiting out the ack deadline in every scenario.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker.constants import ATTR_EVENT_TYPE, LEDGER_TABLE, STAGING_PREFIX

log = logging.getLogger(__name__)

PHASES = (
    "extraction_started",  # the first batch was read from the source
    "part_written",  # a Parquet part file is on disk, not yet loaded
    "staging_loaded",  # a load job into the staging table finished
    "before_commit",  # just before the commit transaction is submitted
    "commit_submitted",  # the commit job is executing on BigQuery; jobs.insert has not answered
    "commit_returned",  # jobs.insert answered (the emulator runs the job before it answers); unread
    "after_commit",  # the commit finished; run.completed not yet published
    "after_completed",  # run.completed published; the request not yet acked
)
CATEGORIES = ("job-wait", "ledger-read", "staging-drop", "publish", "any")
# The statement the held commit waits in, and the one that fails it when the test asks.
HOLD_FIFO, HOLD_FAIL = "commit.fifo", "fail"
HELD_COMMIT_ERROR = "fault injection: the held commit fails"
_COMMIT_MARKER = "COMMIT TRANSACTION;"
_JOB_URL = re.compile(r"/projects/[^/]+/(?:jobs|queries)/([^/?]+)")
_TABLE_URL = re.compile(r"/datasets/[^/]+/tables/([^/?]+)")

# Phases only a job of several tables has between the ones above (also reached by a one-table job,
# where they fall between staging_loaded and before_commit).
JOB_PHASES = (
    "table_staged",  # one table of the job staged, verified and checked; the next not yet read
)
# Phases only a cdc run has (docs/cdc.md).
CDC_PHASES = (
    "cdc_planned",  # the range is fixed (a first run: its slot created, the snapshot open); unread
    "cdc_committed",  # the BigQuery commit recorded the new position; the slot not yet advanced
)


# Phases only a run committed in sub-windows has (worker/sub_window_run.py), besides the ones above,
# which it passes once per sub-window (the commit points once per sub-window's commit).
SUB_WINDOW_PHASES = (
    "sub_window_committed",  # a sub-window's commit finished; the next sub-window not yet read
)


# Phases only a catalog run read in key chunks has (worker/catalog_chunk_run.py), besides the
# extraction and load points above, which it passes per chunk, and the commit points once.
CATALOG_CHUNK_PHASES = (
    "chunk_loaded",  # a chunk's parts are loaded and counted in the run's staging; not yet marked
    "chunk_finished",  # a chunk's finished mark is written; the next chunk not yet read
)


_passages: dict[str, int] = {}  # per phase, how often this process passed it
_passages_lock = threading.Lock()


def _enabled() -> bool:
    return os.environ.get("ETL_FAULT_INJECTION") == "1"


def slow_point() -> None:
    """Make each batch take ETL_SLOW_BATCH_SECONDS (a long run, for shutdown and timeout tests)."""
    if _enabled() and os.environ.get("ETL_SLOW_BATCH_SECONDS"):
        time.sleep(float(os.environ["ETL_SLOW_BATCH_SECONDS"]))


def note_delivery(ack_id: str) -> None:
    """Under ETL_FAULT_ACK_FILE: record a delivery's ack id before anything can kill the worker."""
    path = os.environ.get("ETL_FAULT_ACK_FILE")
    if _enabled() and path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(f"{ack_id}\n")


def crash_point(phase: str) -> None:
    if not _enabled() or os.environ.get("ETL_CRASH_AT") != phase:
        return
    with _passages_lock:  # staging_loaded is passed on the part loader's thread
        _passages[phase] = _passages.get(phase, 0) + 1
        if _passages[phase] < int(os.environ.get("ETL_CRASH_OCCURRENCE", "1")):
            return
    _die(phase)


def _die(where: str) -> None:
    log.critical("fault injection: killing the worker at %s", where)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# --- a commit still executing when the worker dies ------------------------------------------------
def hold_commit(script: str) -> str:
    """Under ETL_CRASH_AT=commit_submitted: the commit script, made to wait on the emulator.

    Before its COMMIT TRANSACTION the script reads a FIFO (`<ETL_COMMIT_HOLD_DIR>/commit.fifo`, a
    DuckDB table function bqemulator passes through): the job blocks there, its DML done inside the
    open transaction, until every writer of the FIFO has closed it. A thread of this worker opens
    the FIFO for writing, which returns only once the emulator is reading it, and then kills the
    worker, so the worker always dies with its jobs.insert outstanding and the job still running.
    The test holds its own writer open for as long as it wants the job to run on (past the
    redelivery), and creates `<dir>/fail` first if the job should then fail (and roll back).
    """
    if not _enabled() or os.environ.get("ETL_CRASH_AT") != "commit_submitted":
        return script
    hold_dir = Path(os.environ.get("ETL_COMMIT_HOLD_DIR", "/nonexistent"))
    fifo, fail = hold_dir / HOLD_FIFO, hold_dir / HOLD_FAIL
    if _COMMIT_MARKER not in script or not fifo.exists():
        raise RuntimeError(f"fault injection: no {fifo} (set ETL_COMMIT_HOLD_DIR) or no COMMIT to hold")
    hold = (
        f"SELECT LENGTH(content) FROM read_text('{fifo}');\n"
        f"SELECT ERROR('{HELD_COMMIT_ERROR}') FROM read_text('{fail}');\n"
    )

    def die_once_the_job_waits() -> None:
        os.open(fifo, os.O_WRONLY)  # returns when the emulator opened the FIFO: the job is running
        _die("commit_submitted (the commit job is executing; jobs.insert has not answered)")

    threading.Thread(target=die_once_the_job_waits, name="fault-commit-hold", daemon=True).start()
    head, _, tail = script.rpartition(_COMMIT_MARKER)
    return f"{head}{hold}{_COMMIT_MARKER}{tail}"


# --- moments: seeded kills between the named phases -----------------------------------------------
class _Moments:
    """Counts moments per category and dies at the one ETL_KILL_AT names."""

    def __init__(self, kill_at: str, trace: str | None) -> None:
        category, _, number = kill_at.partition(":")
        self.category = category
        self.number = int(number) if number else 0
        if kill_at and (category not in CATEGORIES or self.number < 1):
            raise ValueError(f"ETL_KILL_AT must be <category>:<n>, one of {CATEGORIES}: {kill_at!r}")
        self.trace = trace
        self.counts: dict[str, int] = {}
        self.job_kinds: dict[str, str] = {}  # job id -> category of the requests about it
        self.lock = threading.Lock()

    def reached(self, category: str, label: str) -> None:
        with self.lock:
            counts = [self._count(c) for c in (category, "any")]
            if self.trace:
                with open(self.trace, "a", encoding="utf-8") as file:
                    file.write(f"{category}#{counts[0]} any#{counts[1]} {label}\n")
            hit = (self.category == category and counts[0] == self.number) or (
                self.category == "any" and counts[1] == self.number)
            if hit:
                _die(f"moment {self.category}:{self.number} ({label})")

    def _count(self, category: str) -> int:
        self.counts[category] = self.counts.get(category, 0) + 1
        return self.counts[category]


_moments: _Moments | None = None
_moments_lock = threading.Lock()


def _active_moments() -> _Moments | None:
    global _moments
    if not _enabled() or not (os.environ.get("ETL_KILL_AT") or os.environ.get("ETL_FAULT_TRACE")):
        return None
    with _moments_lock:
        if _moments is None:
            _moments = _Moments(os.environ.get("ETL_KILL_AT", ""), os.environ.get("ETL_FAULT_TRACE"))
        return _moments


def instrument_publisher(publisher: Any) -> Any:
    """Make every publish of this Pub/Sub publisher three moments (returns the publisher)."""
    moments = _active_moments()
    if moments is None:
        return publisher
    publish: Callable[..., Any] = publisher.publish

    def publish_with_moments(topic: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        label = f"publish {kwargs.get(ATTR_EVENT_TYPE, '?')}"
        moments.reached("publish", f"{label} before")
        future = publish(topic, data, *args, **kwargs)
        moments.reached("publish", f"{label} handed")
        result: Callable[..., Any] = future.result

        def confirmed(*result_args: Any, **result_kwargs: Any) -> Any:
            value = result(*result_args, **result_kwargs)
            moments.reached("publish", f"{label} confirmed")
            return value

        future.result = confirmed
        return future

    publisher.publish = publish_with_moments
    return publisher


def instrument_bigquery(client: Any) -> Any:
    """Make every HTTP request of this BigQuery client two moments (returns the client)."""
    moments = _active_moments()
    if moments is None:
        return client
    session = client._http
    send: Callable[..., Any] = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data", args[0] if args else None)
        category, label = _classify(moments, method, url, data)
        moments.reached(category, f"{label} before")
        response = send(method, url, *args, **kwargs)
        moments.reached(category, f"{label} answered {getattr(response, 'status_code', '?')}")
        return response

    session.request = request
    return client


def _classify(moments: _Moments, method: str, url: str, data: Any) -> tuple[str, str]:
    """(category, label) of one BigQuery request, from its method, URL and JSON body."""
    path = url.split("?")[0]
    table = _TABLE_URL.search(path)
    if method == "DELETE" and table and table.group(1).startswith(STAGING_PREFIX):
        return "staging-drop", f"DELETE table {table.group(1)}"
    job = _JOB_URL.search(path)
    if job:  # jobs.get, jobs.getQueryResults
        kind = moments.job_kinds.get(job.group(1), "bq")
        return kind, f"{method} {'queries' if '/queries/' in path else 'jobs'}/{job.group(1)}"
    if method == "PUT" and path.endswith("/jobs"):  # a resumable upload's data: the load job runs
        return "job-wait", "PUT upload data (the load job runs)"
    body = _json(data)
    if method == "POST" and path.endswith("/jobs") and body is not None:  # jobs.insert, uploads
        job_id = str(body.get("jobReference", {}).get("jobId", "?"))
        query = str(body.get("configuration", {}).get("query", {}).get("query", ""))
        if job_id.startswith("etl_"):  # the sink's deterministic ids: loads and commits
            moments.job_kinds[job_id] = "job-wait"
            # The emulator runs a query job before it answers jobs.insert (a load: at the upload).
            return ("job-wait" if query else "bq"), f"insert {job_id}"
        if LEDGER_TABLE in query and _COMMIT_MARKER not in query:
            moments.job_kinds[job_id] = "ledger-read"
            return "ledger-read", f"insert ledger query {job_id}"
        return "bq", f"insert query {job_id}"
    return "bq", f"{method} {path.rsplit('/bigquery/v2/', 1)[-1][:120]}"


def _json(data: Any) -> dict[str, Any] | None:
    if isinstance(data, bytes | str) and data[:1] in ("{", b"{"):
        try:
            loaded = json.loads(data)
        except ValueError:
            return None
        return loaded if isinstance(loaded, dict) else None
    return None
