"""`python -m devstack.bqemulator_main start ...`: bqemulator without its automatic time-travel copies.

bqemulator 1.4 supports `FOR SYSTEM_TIME AS OF` by copying the WHOLE table
(`CREATE TABLE snapshot AS SELECT * FROM t`) after every load, DML statement and streaming insert,
and keeps each copy for `time_travel_retention_days` (at least one day, so for a test session's
whole life). Neither the worker nor its tests read a table's past, so the copies only cost: 40 % of
the emulator's CPU in a 1M-row run (py-spy: each 500k-row part load copies the staging table, the
commit copies the destination), and memory and time that grow with every write of a test session
(the ledger, heads and history tables are copied whole on every insert). Real BigQuery's time
travel costs no query time, so the emulator without the copies is the closer stand-in.

Only the automatic copies go; a `CREATE SNAPSHOT TABLE` (kind USER) still works. A bqemulator
without the hook this patches runs unchanged, with a note on stderr.
"""

from __future__ import annotations

import sys
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


def main() -> int:
    _without_auto_snapshots()
    from bqemulator.cli import main as emulator_main

    sys.argv[0] = "bqemulator"
    result = emulator_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
