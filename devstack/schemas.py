"""`make schemas`: write schemas/<message>.json from the pydantic models (the contract Django uses)."""

from __future__ import annotations

import sys
from pathlib import Path

from worker.messages import SCHEMA_MODELS, dumps_schema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def expected_files() -> dict[Path, str]:
    return {SCHEMA_DIR / f"{name}.json": dumps_schema(name) for name in SCHEMA_MODELS}


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in expected_files().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(SCHEMA_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
