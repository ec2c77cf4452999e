"""What CDC adds to the staged rows, and the names of its slot and publication.

A CDC run stages one row per change: the table's columns plus `_etl_seq` (its order in the run),
`_etl_op` (I, U, D, or T for a TRUNCATE) and `_etl_unchanged` (`,a,b,`: the columns whose
destination value the change keeps). The commit keeps the last change per key (worker/sinks).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import pyarrow as pa

from worker.columns import Column
from worker.errors import ConfigurationError

SEQ: Final = "_etl_seq"
OP: Final = "_etl_op"
UNCHANGED: Final = "_etl_unchanged"
CHANGE_COLUMNS: Final = (
    Column(SEQ, "cdc change order", pa.int64(), "INT64"),
    Column(OP, "cdc operation", pa.string(), "STRING"),
    Column(UNCHANGED, "cdc columns kept", pa.string(), "STRING"),
)
CHANGE_NAMES: Final = frozenset(col.name for col in CHANGE_COLUMNS)
# PostgreSQL identifiers are at most 63 bytes (NAMEDATALEN - 1); slot names are lower-case
# letters, digits and underscores. Publication names are held to the same, so that they need no
# quoting in `publication_names` (which folds unquoted names to lower case).
MAX_NAME_CHARS: Final = 63
NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_UNSAFE = re.compile(r"[^a-z0-9_]")


def unchanged_text(columns: tuple[str, ...]) -> str | None:
    """`,a,b,`: searched in the commit with STRPOS(',a,'); None when every value was sent."""
    return f",{','.join(columns)}," if columns else None


def default_name(data_source_id: int, dest_table: str) -> str:
    """`etl_<data source>_<destination>`, stable for the pair; a destination whose name is not
    already safe (upper case, too long) gets a hash of its exact name, so that two never meet."""
    safe = _UNSAFE.sub("_", dest_table.lower())
    name = f"etl_{data_source_id}_{safe}"
    if safe == dest_table and len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha256(dest_table.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME_CHARS - 9]}_{digest}"


def checked_name(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"{kind} {name!r} must be 1 to 63 lower-case letters, digits or underscores, not starting "
            "with a digit")
    return name
