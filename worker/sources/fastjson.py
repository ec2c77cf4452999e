"""JSON in bulk, with exactly `json_text`'s results (docs/performance.md, changes 3 and 8).

Profiles of the generic path showed JSON re-serialisation in pure Python (`_encode_exact` for any
document holding a non-integer number) taking most of the time. Here documents are proven to be
json_text's output already (once compacted) by orjson, a block at a time, and the rest go through
`fast_json_text`, which gives json_text's output with the C encoder. Whatever cannot be proven goes
to `jsontext.json_text` itself.

Used by every path: the generic path (the `json_text` converter's twin), PostgreSQL COPY and the
raw MySQL reader (its text form). Knows no reader and no dialect (docs/sources.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from worker.columns import Column
from worker.sources.arrays import NulledValues, column_array
from worker.sources.columnar import kinds
from worker.sources.jsontext import JSON_MAX_DEPTH, bigquery_json_number, json_text, too_deep

# A character that JSON text from the source must not contain (else: the generic converter); it
# marks non-integer numbers so that C's json.dumps writes them verbatim.
_MARK = "\ue000"
# An integer of at most 18 digits is always an INT64; a longer digit run anywhere (even inside a
# string: the check is conservative) sends the document to the generic converter.
_LONG_DIGIT_RUN = re.compile(r"[0-9]{19}")


Mask = npt.NDArray[np.bool_]  # one flag per document


class _Unfit(Exception):
    """A number BigQuery JSON cannot hold: the generic converter decides (it returns None)."""


def _marked_number(text: str) -> str:
    number = Decimal(text)
    # Up to 15 digits without an exponent always survive FLOAT64; anything else gets the exact check.
    if (len(text) > 16 or "e" in text or "E" in text) and not bigquery_json_number(number):
        raise _Unfit(text)
    return _MARK + str(number) + _MARK


def fast_json_text(text: str | bytes) -> str | None:
    """`jsontext.json_text`, same output, without the pure-Python encoder for non-integers.

    json_text decodes with Decimal floats, checks every number fits BigQuery JSON, and re-encodes
    compactly, writing Decimals with str(). Here floats become marked strings, which the C encoder
    writes quoted; removing the quotes and marks leaves str(Decimal) exactly where json_text puts it.
    """
    if not isinstance(text, str) or _MARK in text or _LONG_DIGIT_RUN.search(text) or too_deep(text):
        return json_text(text)
    try:
        value = _DECODER.decode(text)
    except _Unfit:
        return None
    except ValueError:
        return json_text(text)  # whatever json_text makes of invalid JSON
    out = _ENCODER.encode(value)
    if _MARK in out:
        out = out.replace('"' + _MARK, "").replace(_MARK + '"', "")
    return out


# Built once: json.loads/dumps with arguments build a new decoder/encoder on every call.
_DECODER = json.JSONDecoder(parse_float=_marked_number)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


# JSON that json_text gives back as the document itself once the space after each separator goes
# (jsonb's and MySQL's own spelling, `{"a": 1, "b": [2, 3]}`): a document that orjson parses, whose
# canonical form (orjson.dumps) is that compacted text, numbers aside. orjson's canonical form has no
# whitespace, one value per key (a repeated key is dropped, as json_text drops it), and the strings
# as written when they hold no escape; so equality, digits ignored, proves the document valid, its
# keys unique, no other whitespace, no separator inside a string. The numbers stay as written, which
# is how json_text writes them unless _RISKY_JSON says otherwise: more than 15 digits (the exact
# check), an exponent or a tiny number (str(Decimal) writes 1E+2, 1E-7), -0 (written 0). A backslash
# (an escape orjson might spell differently from json) or a control character goes to json_text too.
_RISKY_JSON = r"[0-9.]{16,}|0\.000000|-0[^.0-9]|-0$|[0-9.][eE]|[eE][+-]?[0-9]|\\|[\x00-\x1f]"
_NUMBER_CHARS = b"0123456789.eE+-"


def json_texts(values: Sequence[Any], column: Column, nulled: NulledValues) -> pa.Array:
    """column_array(values, column, json_text, nulled), same result: the `json_text` converter's twin
    on the generic path (never None: what it cannot prove in bulk it converts per value itself)."""
    if not kinds(values) <= {str}:
        return column_array(values, column, fast_json_text, nulled)
    return json_column(pa.array(values, type=pa.string()), column, nulled, values)


def json_column(texts: pa.Array, column: Column, nulled: NulledValues,
                values: Sequence[Any] | None = None) -> pa.Array:
    """json_text of each of these texts (NULL and counted when it says None): a document whose
    compacted text is provably json_text's output keeps it; the others go through fast_json_text.
    The proof stays in Arrow (no Python string per document) until a document needs converting."""
    compact = pc.replace_substring(pc.replace_substring(texts, ", ", ","), ": ", ":")
    exact = _compact_is_exact(texts, compact, column.name)
    if exact.all():
        return compact
    others = [i for i in np.flatnonzero(~exact).tolist() if texts[i].is_valid]
    if not others:
        return compact
    converted: list[str | None] = []
    mask = np.zeros(len(texts), dtype=bool)
    for i in others:
        value = values[i] if values is not None else texts[i].as_py()
        converted.append(fast_json_text(value))
        if converted[-1] is None:
            nulled.record(column, value)
        mask[i] = True
    return pc.replace_with_mask(compact, pa.array(mask), pa.array(converted, type=pa.string()))


def _compact_is_exact(texts: pa.Array, compact: pa.Array, family: str) -> Mask:
    """Per document: is its compacted text what json_text returns? (False: json_text decides.)
    First by the column's templates (one RE2 pass each), then, for what they leave, by orjson."""
    valid = texts.is_valid()
    exact = _templated(texts, valid, family)
    rest = pc.and_not(valid, pa.array(exact))
    if not pc.any(rest).as_py():  # the common case (or no document): no list to build
        return exact
    chosen = pc.indices_nonzero(rest)
    exact[chosen.to_numpy()] = _proven_by_orjson(texts.take(chosen), compact.take(chosen))
    return exact


def _proven_by_orjson(texts: pa.Array, compact: pa.Array) -> Mask:
    """Per document: not risky, and orjson writes back its compacted text (`_canonical_mask`)."""
    risky = pc.or_(pc.match_substring_regex(texts, pattern=_RISKY_JSON), maybe_too_deep(texts))
    plain = pc.fill_null(pc.invert(risky), False)
    exact = np.zeros(len(texts), dtype=bool)
    chosen = pc.indices_nonzero(plain)
    if len(chosen):
        exact[chosen.to_numpy()] = _canonical_mask(texts.take(chosen), compact.take(chosen))
    return exact


def maybe_too_deep(texts: pa.Array) -> pa.Array:
    """Documents that might nest deeper than BigQuery allows (json_text counts exactly): more
    openings than the limit; only a text longer than the limit can have that many."""
    long = pc.fill_null(pc.greater(pc.binary_length(texts), JSON_MAX_DEPTH), False)
    if not pc.any(long).as_py():
        return long
    openings = pc.add(pc.count_substring(texts, "["), pc.count_substring(texts, "{"))
    return pc.fill_null(pc.greater(openings, JSON_MAX_DEPTH), False)


# --- the template proof ----------------------------------------------------------------------------
# The documents of one column mostly share their keys. A template is a regex built from one
# document: its keys literally, in order, each once; every scalar by the grammar of a scalar that
# json_text writes as written (a string with no backslash, no control character and no `, ` or `: `
# inside, which the compaction would change; a number without exponent or leading zero; true, false,
# null); lists of scalars of any length; the separators `,` or `, ` and `:` or `: ` only. A document
# that matches it is JSON, has no repeated key, no number json_text spells otherwise or refuses (the
# numbers `_RISKY_JSON` lets through), no whitespace but what the compaction removes and at most
# _TEMPLATE_MAX_DEPTH levels, so its compacted text is json_text's output:
# RE2 proves it in one pass, with no Python object per document (orjson's parse, write-back and the
# freeing of what it built cost ~0.55 us per document; the template's pass ~0.1). Whatever document
# the template was learnt from, the proof is the template's own, so any template is sound for any
# document; the ones that match nothing merely cost a pass that fails at the first differing byte.
_PLAIN_CHARS = r'(?:[^"\\\x00-\x1f,:]|[,:]+[^"\\\x00-\x1f ,:])*[,:]*'
_PLAIN_STRING = f'"{_PLAIN_CHARS}"'


def _plain_number() -> str:
    """A number json_text writes as written, in the shapes `_RISKY_JSON` lets through: no exponent,
    no leading zero, not -0, at most 15 digits and dot in all (beyond, the exact FLOAT64 check
    decides), below 1 fewer than six zeros after the dot (str(Decimal) writes 1E-7). Only the shapes
    RE2's DFA matches fast (an exact bound on the total made the pass 60 % slower): integers of up to
    15 digits; decimals of up to 4+10, 7+7 or 10+4 digits; below 1, up to 5 zeros then 7 digits."""
    decimals = [rf"[1-9][0-9]{{0,{whole - 1}}}\.[0-9]{{1,{14 - whole}}}" for whole in (4, 7, 10)]
    below_one = r"0\.(?:0{0,5}[1-9][0-9]{0,6}|0{1,5})"
    return rf"(?:0|-?(?:[1-9][0-9]{{0,14}}|{'|'.join(decimals)}|{below_one}))"


_PLAIN_NUMBER = _plain_number()
_PLAIN_SCALAR = f"(?:{_PLAIN_STRING}|{_PLAIN_NUMBER}|true|false|null)"
_PLAIN_KEY = re.compile(_PLAIN_CHARS)  # a key the template can spell literally (same classes)
_ITEMS, _PAIR = ", ?", ": ?"
_TEMPLATE_MAX_DEPTH = 32  # far below BigQuery's 500 levels: a template never proves a deep document
_TEMPLATE_MAX_CHARS = 20_000  # a list of objects doubles its item's regex; past this, orjson decides
_TEMPLATES_KEPT = 4  # per column name, the most recently learnt first
_LEARN_FROM = 16  # fewer documents left than this: orjson proves them, nothing is learnt
_templates: dict[str, tuple[str, ...]] = {}


def _templated(texts: pa.Array, plain: pa.Array, family: str) -> Mask:
    """Per document: plain and matching one of `family`'s templates (learning one from the first
    plain document no template matches, when enough are left)."""
    proven = np.zeros(len(texts), dtype=bool)
    left: pa.Array | None = plain
    for known in _templates.get(family, ()):
        left = _match_left(texts, left, known, proven) if left is not None else None
    if left is None or (pc.sum(left).as_py() or 0) < _LEARN_FROM:
        return proven
    pattern = _template_of(texts[pc.index(left, True).as_py()].as_py())
    if pattern is not None and _match_left(texts, left, pattern, proven) is not left:
        _remember(family, pattern)
    return proven


def _match_left(texts: pa.Array, left: pa.Array, pattern: str, proven: Mask) -> pa.Array | None:
    """Marks in `proven` the documents left that match `pattern`; the ones still left (None: none).
    Returns `left` itself when nothing matched."""
    matched = pc.and_(left, pc.fill_null(pc.match_substring_regex(texts, pattern=pattern), False))
    if not pc.any(matched).as_py():
        return left
    proven |= matched.to_numpy(zero_copy_only=False)
    still = pc.and_not(left, matched)
    return still if pc.any(still).as_py() else None


def _remember(family: str, pattern: str) -> None:
    if family not in _templates and len(_templates) >= 256:
        _templates.clear()  # many column names: keep the cache small rather than exact
    kept = tuple(p for p in _templates.get(family, ()) if p != pattern)
    _templates[family] = (pattern, *kept)[:_TEMPLATES_KEPT]  # one assignment: threads may share it


def _template_of(text: str) -> str | None:
    """The anchored template regex of this document's shape, or None (not JSON, a key the template
    cannot spell, a list mixing shapes, too large)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    body = _value_template(value)
    return None if body is None or len(body) > _TEMPLATE_MAX_CHARS else f"^{body}$"


def _value_template(value: Any, depth: int = 0) -> str | None:
    if depth > _TEMPLATE_MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return _object_template(value, depth + 1)
    if isinstance(value, list):
        return _list_template(value, depth + 1)
    return _PLAIN_SCALAR if _is_scalar(value) else None


def _object_template(value: dict[str, Any], depth: int) -> str | None:
    pairs = []
    for key, item in value.items():
        inner = _value_template(item, depth)
        if inner is None or not _PLAIN_KEY.fullmatch(key):
            return None
        pairs.append(f'"{_literal(key)}"{_PAIR}{inner}')
    return r"\{" + _ITEMS.join(pairs) + r"\}"


def _list_template(items: list[Any], depth: int) -> str | None:
    item = _item_template(items, depth)
    return None if item is None else rf"\[(?:{item}(?:{_ITEMS}{item})*)?\]"


def _item_template(items: list[Any], depth: int) -> str | None:
    """What every item of the list matches: any scalar (an empty list too: any list of scalars), or
    the one shape all its items share."""
    if all(_is_scalar(item) for item in items):
        return _PLAIN_SCALAR
    shapes = {_value_template(item, depth) for item in items}
    if len(shapes) != 1:
        return None
    (shape,) = shapes
    return shape if shape is not None and len(shape) <= _TEMPLATE_MAX_CHARS else None


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _literal(key: str) -> str:
    """The key as RE2 literal text: ASCII letters and digits and non-ASCII characters as themselves,
    any other character as its hex escape (nothing is a metacharacter then)."""
    return "".join(c if c.isalnum() or not c.isascii() else f"\\x{{{ord(c):02x}}}" for c in key)


# Documents are checked a block at a time: one JSON array holding them all, a sentinel string
# between each two, parsed and written back by orjson in one call each. The sentinel's escape
# cannot occur in a document (a backslash is risky), so it marks where each document starts and
# ends on both sides.
_SENTINEL = "\x00"
_SENTINEL_TEXT = ',"\\u0000",'
_SMALLEST_SPLIT = 8


def _canonical_mask(docs: pa.Array, compacted: pa.Array) -> list[bool]:
    """Per document: does orjson parse it and write back its compacted text, digits aside? A block
    that fails is halved until the documents that fail are found one by one."""
    if _all_canonical(docs, compacted):
        return [True] * len(docs)
    if len(docs) == 1:
        return [False]
    if len(docs) <= _SMALLEST_SPLIT:
        return [_all_canonical(docs.slice(i, 1), compacted.slice(i, 1)) for i in range(len(docs))]
    half = len(docs) // 2
    return (_canonical_mask(docs.slice(0, half), compacted.slice(0, half))
            + _canonical_mask(docs.slice(half), compacted.slice(half)))


def _all_canonical(docs: pa.Array, compacted: pa.Array) -> bool:
    if not len(docs):
        return True
    try:
        parsed = orjson.loads(_json_array(docs))
    except orjson.JSONDecodeError:
        return False
    # Each document one value: the sentinels sit exactly between them (a document like `1,2` or
    # `[1` shifts them).
    if len(parsed) != 2 * len(docs) - 1 or parsed[1::2] != [_SENTINEL] * (len(docs) - 1):
        return False
    try:
        canonical = orjson.dumps(parsed)
    except orjson.JSONEncodeError:
        return False
    written = _json_array(compacted)
    return canonical.translate(None, _NUMBER_CHARS) == written.translate(None, _NUMBER_CHARS)


def _json_array(texts: pa.Array) -> bytes:
    """`[` + the texts joined by the sentinel + `]`, joined by Arrow (one bytes object, no per-text
    Python string). Only documents without NULL get here (a NULL is never plain)."""
    whole = pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts)
    joined = pc.binary_join(whole, pa.scalar(_SENTINEL_TEXT, texts.type))[0]
    body: bytes = joined.as_buffer().to_pybytes()
    return b"[" + body + b"]"
