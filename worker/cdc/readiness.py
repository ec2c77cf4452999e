"""What `cdc-check` prints and a cdc run checks first, for either change log."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import CdcSetupError


@dataclass(frozen=True)
class Readiness:
    """Every problem with the change that fixes it, and notes (the slot, the binlog position)."""

    problems: tuple[str, ...]
    notes: tuple[str, ...]

    def raise_if_any(self) -> None:
        if self.problems:
            raise CdcSetupError("CDC cannot run: " + "; ".join(self.problems))
