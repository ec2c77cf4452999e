"""Source column names → BigQuery column names: one rule, as data, the same on every run.

BigQuery's strict column names are ASCII letters, digits and underscores, start with a letter or
an underscore, hold at most 300 characters, never start with a reserved prefix, and compare
case-insensitively. (Flexible column names would allow more, but need special handling in the
Storage Read and Write APIs; strict names work everywhere.) The rule:

1. A name that is already a strict BigQuery name is kept exactly, case and all: every table that
   loaded before this rule existed keeps its columns, and `CustomerID` stays `CustomerID`.
2. Any other name becomes lower snake_case, the convention dlt users know: symbols spelled out
   (`%` → `pct`), Latin letters transliterated (accents dropped: `café` → `cafe`, `größe` →
   `grosse`; letters Unicode does not decompose from a table: `ø` → `o`), words split at spaces,
   punctuation and case changes (`Unit Price` → `unit_price`, `item-code` → `item_code`,
   `OrderDate (UTC)` → `order_date_utc`),
   `_` before a leading digit (`123start` → `_123start`). (A converted name never starts with
   a reserved prefix such as `_PARTITION`: they all begin with `_`, and words never do.)
3. When letters of another script had to be dropped, or the name is longer than 300 characters,
   a tag (8 hex digits of the name's SHA-256) keeps it apart from any other name: `имя` → `_63565d7f`.

Each name maps on its own, never depending on the table's other columns, so a column added later
maps the same way on every run and schema evolution never makes a second column for one source
column. Two source columns that land on the same BigQuery name (`Order` and `order`, or `Unit Price`
and `unit_price`) are a permanent `ColumnNameError` naming both; the request's `column_names`
(source name → BigQuery name) settles it explicitly. dlt raises on such collisions too; a silent
`_2` suffix would depend on which columns exist, and so could move when one is added or dropped.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping

from worker.errors import ColumnNameError

MAX_NAME_CHARS = 300
TAG_HEX_DIGITS = 8
STRICT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
# BigQuery reserves these prefixes (case-insensitive) for its pseudo-columns; `_etl_` is ours.
RESERVED_PREFIXES = ("_table_", "_file_", "_partition", "_row_timestamp", "__root__", "_colidentifier",
                     "_etl_")
LEADING_DIGIT_ESCAPE = "_"
# Symbols that carry meaning in a column name, spelled as a word (`discount %` → `discount_pct`).
SYMBOL_WORDS: Mapping[str, str] = {
    "%": "pct", "#": "num", "&": "and", "+": "plus", "@": "at", "$": "usd", "€": "eur", "£": "gbp",
}
# Latin letters that Unicode does not decompose into an ASCII letter plus accents.
TRANSLITERATIONS: Mapping[str, str] = {
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH", "ł": "l", "Ł": "L",
    "\u0131": "i",  # dotless i
}
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


def is_strict(name: str) -> bool:
    return bool(STRICT_NAME.fullmatch(name)) and not _reserved(name)


def bigquery_name(source_name: str) -> str:
    """The BigQuery column name of a source column name (the rule in this module's docstring)."""
    if is_strict(source_name):
        return source_name
    words, lost = _words(source_name)
    name = "_".join(words).lower()
    if name[:1].isdigit():
        name = LEADING_DIGIT_ESCAPE + name
    if lost or not name or len(name) > MAX_NAME_CHARS:
        name = f"{name[:MAX_NAME_CHARS - TAG_HEX_DIGITS - 1]}_{_tag(source_name)}"
    return name


def column_names(source_names: Iterable[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Source name → BigQuery name for these columns; a ColumnNameError when two would be one."""
    overrides = overrides or {}
    for source, chosen in overrides.items():
        if not is_strict(chosen):
            raise ColumnNameError(
                f"column_names maps {source!r} to {chosen!r}, which is not a BigQuery column name "
                "(ASCII letters, digits and _, not starting with a digit or a reserved prefix, "
                f"at most {MAX_NAME_CHARS} characters)")
    mapping = {source: overrides.get(source) or bigquery_name(source) for source in source_names}
    taken: dict[str, str] = {}
    for source, name in mapping.items():
        other = taken.setdefault(name.lower(), source)
        if other != source:
            raise ColumnNameError(
                f"source columns {other!r} and {source!r} would both load into BigQuery column "
                f"{name!r} (BigQuery column names ignore case): map one of them to another name with "
                f'the request\'s column_names, e.g. {{"{source}": "{name}_2"}}')
    return mapping


def _words(text: str) -> tuple[list[str], bool]:
    """ASCII words of `text`, and whether letters or digits without an ASCII form were dropped.
    Case changes split words before letters are folded (`ÜberWert` → `Über Wert` → `uber_wert`)."""
    spelled = "".join(f" {SYMBOL_WORDS[ch]} " if ch in SYMBOL_WORDS else ch for ch in text.strip())
    letters = "".join(TRANSLITERATIONS.get(ch, ch) for ch in _case_split(spelled))
    folded = unicodedata.normalize("NFKD", letters)
    lost = any(ch.isalnum() for ch in folded if not ch.isascii() and not unicodedata.combining(ch))
    ascii_only = "".join(ch for ch in folded if ch.isascii())
    return [word for word in _NOT_WORD.split(ascii_only) if word], lost


def _case_split(text: str) -> str:
    """A space at each case change: `OrderID` → `Order ID`, `userName` → `user Name`."""
    out: list[str] = []
    for i, ch in enumerate(text):
        before = text[i - 1] if i else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        lower_to_upper = ch.isupper() and (before.islower() or before.isdigit())
        acronym_end = ch.isupper() and before.isupper() and after.islower()
        out.append(" " + ch if lower_to_upper or acronym_end else ch)
    return "".join(out)


def _reserved(name: str) -> bool:
    return name.lower().startswith(RESERVED_PREFIXES)


def _tag(source_name: str) -> str:
    return hashlib.sha256(source_name.encode()).hexdigest()[:TAG_HEX_DIGITS]


# --- docs/names.md -------------------------------------------------------------------------------
EXAMPLES = ("CustomerID", "order", "Unit Price", "item-code", "OrderDate (UTC)", "größe", "café",
            "discount %", "123start", "userID", "IPAddress v4", "имя", "名前_id", "_PARTITIONTIME")


def names_markdown() -> str:
    """docs/names.md: the rule and a table of real results (`tests/unit/test_names.py` checks it)."""
    rows = "".join(f"| `{name}` | `{bigquery_name(name)}` |\n" for name in EXAMPLES)
    symbols = ", ".join(f"`{ch}` → `{word}`" for ch, word in SYMBOL_WORDS.items())
    letters = ", ".join(f"`{ch}` → `{ascii_}`" for ch, ascii_ in TRANSLITERATIONS.items())
    doc = (__doc__ or "").strip()
    return (
        "# Column names\n\nGenerated from `worker/names.py` by `worker.names.names_markdown()`; "
        "`tests/unit/test_names.py` fails when this file is stale.\n\n"
        f"{doc}\n\n## Examples\n\n| source column | BigQuery column |\n|---|---|\n{rows}\n"
        f"## Tables\n\nSymbols: {symbols}.\n\nLetters: {letters}.\n\n"
        f"Reserved prefixes (never produced): {', '.join(f'`{p}`' for p in RESERVED_PREFIXES)}.\n"
    )
