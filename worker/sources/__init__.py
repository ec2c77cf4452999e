"""Sources by name: `get_source("postgresql")` etc. All share the SQLAlchemy implementation."""

from __future__ import annotations

from pathlib import Path

from worker.errors import ConfigurationError
from worker.memory import use_worker_memory_pool
from worker.secrets import SecretResolver
from worker.sources.base import Source
from worker.sources.dialect import SqlDialect
from worker.sources.mysql import MySQLDialect
from worker.sources.postgresql import PostgresDialect
from worker.sources.sqlalchemy_source import SqlAlchemySource
from worker.sources.sqlite import SQLiteDialect
from worker.sources.typedoc import Section, render_markdown

use_worker_memory_pool()  # every extraction builds its batches in Arrow's default pool

DIALECTS: dict[str, type[SqlDialect]] = {
    "postgresql": PostgresDialect,
    "mysql": MySQLDialect,
    "sqlite": SQLiteDialect,
}
_TITLES = {"postgresql": "PostgreSQL", "mysql": "MySQL / MariaDB", "sqlite": "SQLite"}
TYPES_DOC = Path(__file__).resolve().parents[2] / "docs" / "types.md"


def get_source(source_type: str, secrets: SecretResolver | None = None, readers: int = 1) -> Source:
    """The source for a request's `source_type`; an unknown name is a ConfigurationError.
    `secrets` resolves password references (default: the default allow-lists, os.environ);
    `readers`: connections reading one table in parallel where the database shares a snapshot."""
    try:
        dialect = DIALECTS[source_type]
    except KeyError:
        valid = ", ".join(sorted(DIALECTS))
        raise ConfigurationError(f"unknown source type {source_type!r}; valid: {valid}") from None
    return SqlAlchemySource(dialect(), secrets, readers)


def types_markdown() -> str:
    """docs/types.md: the mapping tables of every dialect."""
    return render_markdown(
        [
            Section(_TITLES[name], dialect.types, dialect.examples, dialect.losses)
            for name, dialect in DIALECTS.items()
        ]
    )


def write_types_doc(path: Path = TYPES_DOC) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(types_markdown(), encoding="utf-8")


__all__ = ["DIALECTS", "get_source", "types_markdown", "write_types_doc"]
