"""`python -m devstack.bqemulator_main start ...`: bqemulator without its automatic time-travel copies,
parsing each statement's text once.

bqemulator 1.4 supports `FOR SYSTEM_TIME AS OF` by copying the WHOLE table
(`CREATE TABLE snapshot AS SELECT * FROM t`) after every load, DML statement and streaming insert,
and keeps each copy for `time_travel_retention_days` (at least one day, so for a test session's
whole life). Neither the worker nor its tests read a table's past, so the copies only cost: 40 % of
the emulator's CPU in a 1M-row run (py-spy: each 500k-row part load copies the staging table, the
commit copies the destination), and memory and time that grow with every write of a test session
(the ledger, heads and history tables are copied whole on every insert). Real BigQuery's time
travel costs no query time, so the emulator without the copies is the closer stand-in.

Only the automatic copies go; a `CREATE SNAPSHOT TABLE` (kind USER) still works. A bqemulator
without the hook this patches runs unchanged, with a note on stderr. The parse cache is described
below (`_parse_once_per_text`), the request path without its bookkeeping middlewares below
(`_without_bookkeeping_middlewares`); both in docs/bigquery-emulator.md.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


def _without_auto_snapshots() -> None:
    try:
        from bqemulator.versioning.snapshots import SnapshotManager
    except ImportError:
        print("devstack.bqemulator_main: no SnapshotManager; time travel copies stay on", file=sys.stderr)
        return
    original = SnapshotManager.capture

    def capture(self: SnapshotManager, *args: Any, kind: str = "AUTO", **kwargs: Any) -> Any:
        if kind == "AUTO":  # record_change after every write: the caller ignores None
            return None
        return original(self, *args, kind=kind, **kwargs)

    SnapshotManager.capture = capture  # type: ignore[method-assign]


# Parsed statements kept for the rewriters that parse the same text again (each query job's text
# goes through about fifteen, most calling sqlglot.parse_one on it: 30 % of the emulator's CPU in
# the crash suite). Bounded: the repeats come within one job.
PARSE_CACHE_SIZE = 256


def _parse_once_per_text() -> None:
    """sqlglot.parse_one, remembered by its arguments (first in, first out); every caller gets its
    own copy of the tree (the rewriters change trees in place), the kept one is never handed out."""
    import sqlglot

    original = sqlglot.parse_one
    kept: OrderedDict[Hashable, Any] = OrderedDict()  # oldest first
    lock = threading.Lock()  # the emulator runs jobs on a thread pool

    def parse_one(sql: str, read: Any = None, dialect: Any = None, into: Any = None, **opts: Any) -> Any:
        try:
            key: Hashable = (sql, read, dialect, into, tuple(sorted(opts.items())))
            with lock:
                tree = kept.get(key)
        except TypeError:  # an argument that cannot be a key: parse as usual
            return original(sql, read=read, dialect=dialect, into=into, **opts)
        if tree is None:
            tree = original(sql, read=read, dialect=dialect, into=into, **opts)
            with lock:
                kept[key] = tree
                if len(kept) > PARSE_CACHE_SIZE:
                    kept.popitem(last=False)
        return tree.copy()

    sqlglot.parse_one = parse_one  # before bqemulator imports it (`from sqlglot import parse_one`)


# bqemulator's own observability around every REST request: Prometheus counters (served only with
# --metrics, which devstack never passes), an access log line (at INFO, below the `warning` level
# devstack starts it with) and a correlation id for its log lines and a response header no client
# reads. Each is a Starlette BaseHTTPMiddleware, which runs the rest of the request in a task group
# and relays the request and response bodies through memory streams: the three cost 35-45 % of the
# emulator's CPU per request (a tables.get 1.5 -> 0.8 ms, a small load job 6.3 -> 4.7 ms, a query
# 10.8 -> 7.3 ms). The gzip middleware, which changes what a handler sees, stays.
_BOOKKEEPING_MIDDLEWARES = ("MetricsMiddleware", "AccessLogMiddleware", "CorrelationIdMiddleware")


class _PassThrough:
    """A pure ASGI middleware that hands every request to the app unchanged (keyword arguments of
    the middleware it replaces, such as `metrics=`, are ignored)."""

    def __init__(self, app: Any, **_options: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _without_bookkeeping_middlewares() -> None:
    try:
        import bqemulator.api.app as app_module
    except ImportError:
        print("devstack.bqemulator_main: no bqemulator.api.app; its middlewares stay", file=sys.stderr)
        return
    missing = [name for name in _BOOKKEEPING_MIDDLEWARES if not hasattr(app_module, name)]
    if missing:
        print(f"devstack.bqemulator_main: no {missing} in bqemulator.api.app; its middlewares stay",
              file=sys.stderr)
        return
    for name in _BOOKKEEPING_MIDDLEWARES:  # create_app looks them up in its module when it runs
        setattr(app_module, name, _PassThrough)


def main() -> int:
    _parse_once_per_text()  # first: before any bqemulator module binds sqlglot.parse_one
    _without_auto_snapshots()
    _without_bookkeeping_middlewares()
    from bqemulator.cli import main as emulator_main

    sys.argv[0] = "bqemulator"
    result = emulator_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
