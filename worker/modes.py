"""Load modes, declared once: how the source is read and how the commit applies the rows.

Every place that behaves differently per mode asks this table instead of comparing mode names.

| mode | reads | applies |
|---|---|---|
| catalog | the whole table | replace the destination's rows |
| transactional | a window `[low, high)` of a cursor | append |
| merge | a window `[low, high)` of a cursor | upsert by primary key (and deletes: soft, reconciled) |
| cdc | the change log `[last position, now)` (first run: the slot's snapshot) | the last change per key |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from worker import constants as c
from worker.errors import ConfigurationError

Reads = Literal["table", "window", "log"]
Applies = Literal["replace", "append", "merge", "changes"]


@dataclass(frozen=True)
class LoadMode:
    name: str
    reads: Reads
    applies: Applies

    @property
    def windowed(self) -> bool:
        """Runs read consecutive windows of a cursor, chained through the ledger's last high."""
        return self.reads == "window"

    @property
    def keyed(self) -> bool:
        """Rows are identified by a primary key in the destination."""
        return self.applies in ("merge", "changes")


MODES: Mapping[str, LoadMode] = {
    c.CATALOG: LoadMode(c.CATALOG, reads="table", applies="replace"),
    c.TRANSACTIONAL: LoadMode(c.TRANSACTIONAL, reads="window", applies="append"),
    c.MERGE: LoadMode(c.MERGE, reads="window", applies="merge"),
    c.CDC: LoadMode(c.CDC, reads="log", applies="changes"),
}
MODE_NAMES = tuple(MODES)
# The modes whose windows share one chain per data source and destination (switching a table from
# transactional to merge goes on from the last committed high).
WINDOWED = tuple(name for name, mode in MODES.items() if mode.windowed)
# The modes whose runs chain positions of a change log through the ledger (their own chain).
LOGGED = tuple(name for name, mode in MODES.items() if mode.reads == "log")


def mode_of(name: str) -> LoadMode:
    try:
        return MODES[name]
    except KeyError:
        raise ConfigurationError(f"unknown load type {name!r}; valid: {', '.join(MODE_NAMES)}") from None
