"""PostgreSQL log sequence numbers: the text form `X/Y` (two hex halves) and its 64-bit integer."""

from __future__ import annotations

import re

from worker.errors import ConfigurationError

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """`16/B374D848` → 0x16_B374D848."""
    found = _LSN.fullmatch(text.strip())
    if not found:
        raise ConfigurationError(f"not a PostgreSQL LSN: {text!r}")
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_lsn(value: int) -> str:
    """0x16_B374D848 → `16/B374D848` (as PostgreSQL prints it)."""
    if not 0 <= value < 2**64:
        raise ValueError(f"an LSN is 64 bits unsigned, not {value}")
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
