"""docs/types.md, rendered from the type tables: every row is a real `lookup`, never hand-written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.sources.typemap import GENERIC_LOSSES, Loss, TypeExample, TypeTable, lookup


@dataclass(frozen=True)
class Section:
    """One dialect: its type table, documented examples and the values that do not survive."""

    title: str
    table: TypeTable
    examples: Sequence[TypeExample]
    losses: Sequence[Loss]


_HEADER = """\
# Type mapping

Generated from `worker/sources/typemap.py` and the dialect tables by
`worker.sources.types_markdown()`; `tests/sources/test_typemap.py` fails when this file is stale.
Regenerate with:

    .venv/bin/python -c 'import worker.sources as s; s.write_types_doc()'

## Policies

- A column whose type is not listed fails the run with a permanent `UnsupportedTypeError` naming
  the column and its type.
- Naive date-times (PostgreSQL `timestamp`, MySQL `DATETIME`) load as DATETIME; zoned ones
  (`timestamptz`, MySQL `TIMESTAMP`) as TIMESTAMP, in UTC.
- Decimals are exact, never FLOAT64: NUMERIC (decimal128(38, 9)) when the declared precision and
  scale fit it, BIGNUMERIC (decimal256(76, 38)) when they fit that, else the exact decimal text
  (STRING, never scientific notation). Unsigned 64-bit integers load as NUMERIC.
- JSON loads as BigQuery JSON: staged as STRING and converted with `PARSE_JSON` in the commit
  (real BigQuery cannot load Parquet into a JSON column). A JSON `null` stays the JSON value `null`,
  distinct from SQL NULL. Arrays load as REPEATED columns.
- uuid, inet/cidr, interval, enum and time with time zone load as STRING, spelled as the source
  spells them.
- A value BigQuery cannot hold is loaded as NULL and counted per column in `run.completed`'s
  `values_nulled` (`{"column": count}`). A request with `"strict_types": true` fails instead, with
  a permanent `SourceDataError` naming the column (nothing is committed).
- Parquet parts carry an explicit Arrow schema derived from the BigQuery schema
  (`worker.columns.BQ_ARROW_TYPES`); loads set `enable_list_inference` (LIST → REPEATED) and
  `decimal_target_types` NUMERIC + BIGNUMERIC.
"""

def render_markdown(sections: Sequence[Section]) -> str:
    """Markdown tables, one per dialect, from the real lookups of each documented example, then the
    values that do not survive."""
    parts = [_HEADER]
    for section in sections:
        parts.append(f"\n## {section.title}\n\n{_TYPES_HEAD}")
        parts.extend(_type_row(example, section.table) for example in section.examples)
    parts.append("\n## Values that do not survive\n\nEverything not listed here round-trips exactly.\n")
    parts.append(_loss_table("Every source", GENERIC_LOSSES))
    parts.extend(_loss_table(section.title, section.losses) for section in sections)
    return "".join(parts)


_TYPES_HEAD = "| source type | Arrow | BigQuery | notes |\n|---|---|---|---|\n"
_LOSSES_HEAD = "| source types | values | in BigQuery |\n|---|---|---|\n"


def _loss_table(title: str, losses: Sequence[Loss]) -> str:
    rows = "".join(f"| {loss.types} | {loss.values} | {loss.becomes} |\n" for loss in losses)
    return f"\n### {title}\n\n{_LOSSES_HEAD}{rows}"


def _type_row(example: TypeExample, table: TypeTable) -> str:
    target = lookup(example.sa_type, table)
    if target is None:
        return f"| {example.source} | — | unsupported | {example.note} |\n"
    bq_type = f"{target.bq_type} (REPEATED)" if target.repeated else target.bq_type
    return f"| {example.source} | `{target.arrow_type}` | {bq_type} | {example.note} |\n"
