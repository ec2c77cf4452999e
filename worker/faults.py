"""Crash points for the fault-injection suite: the worker kills itself (SIGKILL) at a named phase.

Inert unless the environment has ETL_FAULT_INJECTION=1 (set only by the test suite) and
ETL_CRASH_AT names the phase; ETL_CRASH_OCCURRENCE=N (default 1) kills at the phase's N-th passage
in the process (a job passes a table's points once per table: `table_staged` with N=2 dies between
its second and third table). SIGKILL, not an exception: nothing gets to clean up, exactly as when a
Cloud Run instance or a GKE node disappears.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PHASES = (
    "extraction_started",  # the first batch was read from the source
    "part_written",  # a Parquet part file is on disk, not yet loaded
    "staging_loaded",  # a load job into the staging table finished
    "before_commit",  # just before the commit transaction is submitted
    "commit_submitted",  # the commit job was submitted; its outcome not yet seen
    "after_commit",  # the commit finished; run.completed not yet published
    "after_completed",  # run.completed published; the request not yet acked
)
# Phases only a job of several tables has between the ones above (also reached by a one-table job,
# where they fall between staging_loaded and before_commit).
JOB_PHASES = (
    "table_staged",  # one table of the job staged, verified and checked; the next not yet read
)


_passages: dict[str, int] = {}  # per phase, how often this process passed it
_passages_lock = threading.Lock()


def _enabled() -> bool:
    return os.environ.get("ETL_FAULT_INJECTION") == "1"


def slow_point() -> None:
    """Make each batch take ETL_SLOW_BATCH_SECONDS (a long run, for shutdown and timeout tests)."""
    if _enabled() and os.environ.get("ETL_SLOW_BATCH_SECONDS"):
        time.sleep(float(os.environ["ETL_SLOW_BATCH_SECONDS"]))


def crash_point(phase: str) -> None:
    if not _enabled() or os.environ.get("ETL_CRASH_AT") != phase:
        return
    with _passages_lock:  # staging_loaded is passed on the part loader's thread
        _passages[phase] = _passages.get(phase, 0) + 1
        if _passages[phase] < int(os.environ.get("ETL_CRASH_OCCURRENCE", "1")):
            return
    log.critical("fault injection: killing the worker at %s", phase)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
