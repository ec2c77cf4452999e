"""JSON per value, exactly: the reference that the bulk JSON builders (`worker.sources.fastjson`)
reproduce, declared as the `json_text` converter in `worker.sources.converters`.

BigQuery JSON keeps a number as INT64, UINT64 or FLOAT64. PARSE_JSON (default wide_number_mode
'exact') refuses any other number rather than round it, which would fail the whole commit: such a
document cannot be held, like one nested deeper than BigQuery allows.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_JSON_INT_MIN, _JSON_UINT_MAX = -(2**63), 2**64 - 1


def loads_exact(text: str | bytes) -> Any:
    """json.loads keeping every number exact: non-integers become Decimal (ints are exact already).

    Given to SQLAlchemy as the engine's json_deserializer, so drivers decode JSON with it."""
    return json.loads(text, parse_float=Decimal)


def compact_json(value: Any) -> str:
    """Compact JSON text of a decoded value (no spaces, UTF-8 kept), numbers exactly as stored."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except TypeError:  # a Decimal from loads_exact: the C encoder cannot write it verbatim
        return _encode_exact(value)


def _encode_exact(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # its literal as parsed, e.g. 1.10000000000000000001 or 1E+400
    if isinstance(value, dict):
        items = (f"{_encode_exact(str(key))}:{_encode_exact(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode_exact(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def bigquery_json_number(number: int | Decimal) -> bool:
    """True when BigQuery JSON holds `number` exactly: an INT64 or UINT64, or a FLOAT64 whose shortest
    text has the same value (PARSE_JSON's 'exact' round-trip rule; 2.50 is fine, 0.1 is fine,
    1.10000000000000000001 and 1e400 are not)."""
    if isinstance(number, int) and _JSON_INT_MIN <= number <= _JSON_UINT_MAX:
        return True
    try:
        as_float = float(number)
    except OverflowError:  # an int beyond any FLOAT64
        return False
    return math.isfinite(as_float) and Decimal(repr(as_float)) == Decimal(number)


def _json_numbers_fit(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_json_numbers_fit(item) for item in value.values())
    if isinstance(value, list):
        return all(_json_numbers_fit(item) for item in value)
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return bigquery_json_number(value)
    return True


JSON_MAX_DEPTH = 500  # BigQuery JSON holds at most 500 levels of nesting


def too_deep(text: str | bytes) -> bool:
    """Nested deeper than BigQuery JSON allows (brackets inside strings do not count)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if text.count("[") + text.count("{") <= JSON_MAX_DEPTH:
        return False  # the common case, in two C passes
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest > JSON_MAX_DEPTH


def json_text(text: str | bytes) -> str | None:
    """The source's JSON text as compact JSON for PARSE_JSON; None when it is not JSON, is nested
    deeper than BigQuery allows, or holds a number BigQuery JSON cannot store exactly. A JSON `null`
    stays the JSON value null."""
    if isinstance(text, str | bytes) and too_deep(text):
        return None
    try:
        value = loads_exact(text)
        return compact_json(value) if _json_numbers_fit(value) else None
    except (ValueError, TypeError):  # not JSON text (UnicodeDecodeError is a ValueError)
        return None
