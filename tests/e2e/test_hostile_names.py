"""Hostile names that exist: tables and columns whose legal names hold quotes, backticks, semicolons,
`--`, comment markers, unicode look-alikes and spaces, loaded through every read path (PostgreSQL
COPY and its generic path, MariaDB's raw reader and its generic path, SQLite). The worker's own
SELECT, COUNT, COPY and raw reads quote them; after each load the canary tables and the destination
dataset are intact, and BigQuery holds exactly the source rows under the rule's names."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery
from sqlalchemy.dialects import mysql, postgresql

from tests.conftest import PROJECT
from tests.e2e.oneshot import RunOnce, run_once
from tests.types.golden import _FastPathSpy
from worker.names import bigquery_name
from worker.sources import mysql_raw, pg_copy

__all__ = ["run_once"]

HOSTILE_TABLE = 'x"; DROP TABLE users; -- `t` \'q\''
HOSTILE_COLUMNS = ('a"; DROP TABLE users; --', "b`; DROP TABLE users; --", "c'; DELETE FROM users; --",
                   "d /* c */ e", "\uff55sers", "s p a c e")
CANARIES = ("users", "x")
# A column type that keeps a table off the dialect's fast reader (so the generic path reads it too).
SLOW_TYPES = {"postgresql": postgresql.ARRAY(sa.Integer), "mysql": mysql.BIT(8)}


@dataclass
class Place:
    dialect: str
    engine: sa.Engine
    schema: str | None
    params: dict[str, Any]

    def request(self, table: str, dest: str) -> dict[str, Any]:
        body = {"data_source_id": 9, "source_type": self.dialect, "connection_params": self.params,
                "schema_name": self.schema, "source_table_name": table, "dest_table_name": dest,
                "load_type": "catalog"}
        return {k: v for k, v in body.items() if v is not None}

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {name: conn.execute(sa.select(sa.func.count()).select_from(
                sa.table(name, schema=self.schema))).scalar_one() for name in CANARIES}


@pytest.fixture
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "sqlite":
        path = tmp_path / "hostile.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        yield Place("sqlite", engine, None, {"database": str(path)})
        engine.dispose()
        return
    engine = request.getfixturevalue("pg_admin" if request.param == "postgresql" else "mysql_admin")
    schema = request.getfixturevalue("pg_schema" if request.param == "postgresql" else "mysql_db")
    url = engine.url
    yield Place(request.param, engine, schema, {
        "host": url.host, "port": url.port, "username": url.username, "password": url.password or "",
        "database": schema if request.param == "mysql" else url.database})


def hostile_table(place: Place, slow: bool) -> sa.Table:
    extra = (sa.Column("slow", SLOW_TYPES[place.dialect]),) if slow else ()
    columns = (sa.Column(name, sa.String(40)) for name in HOSTILE_COLUMNS)
    return sa.Table(HOSTILE_TABLE + (" slow" if slow else ""), sa.MetaData(),
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False), *columns, *extra,
                    schema=place.schema)


def seed(place: Place, table: sa.Table) -> list[tuple[Any, ...]]:
    metadata = sa.MetaData()
    canaries = [sa.Table(name, metadata, sa.Column("id", sa.Integer), schema=place.schema)
                for name in CANARIES]
    rows = [{"id": i, **{name: f"{name}={i}" for name in HOSTILE_COLUMNS}} for i in range(1, 8)]
    if "slow" in table.c:
        rows = [{**row, "slow": [1, 2] if place.dialect == "postgresql" else 5} for row in rows]
    with place.engine.begin() as conn:
        for canary in canaries:
            canary.create(conn, checkfirst=True)
            conn.execute(canary.insert(), [{"id": n} for n in range(3)])
        table.create(conn)
        conn.execute(table.insert(), rows)
    return [(row["id"], *(row[name] for name in HOSTILE_COLUMNS)) for row in rows]


READ_PATHS = [("postgresql", "fast"), ("postgresql", "generic"), ("mysql", "fast"), ("mysql", "generic"),
              ("sqlite", "generic")]  # SQLite has one read path


@pytest.mark.parametrize(("place", "path"), READ_PATHS, indirect=["place"])
def test_hostile_names_that_exist_load_through_every_read_path_and_harm_nothing(
    place: Place, path: str, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = hostile_table(place, slow=path == "generic" and place.dialect in SLOW_TYPES)
    expected = seed(place, table)
    reader = {"postgresql": pg_copy, "mysql": mysql_raw}.get(place.dialect)
    spy = _FastPathSpy(reader.fast_batches) if reader else None
    if reader and spy:
        monkeypatch.setattr(reader, "fast_batches", spy)
    # When the table loads (COUNT, the stream, the reflection all name it and its columns)
    events = run_once(place.request(table.name, "hostile"), f"run-hostile-{path}")
    assert events[-1].event_type == "run.completed", events[-1]
    # Then the read path was the one meant
    if spy is not None:
        assert spy.used == [path == "fast"]
    # And BigQuery holds exactly the source rows under the rule's names
    names = ["id", *(bigquery_name(name) for name in HOSTILE_COLUMNS)]
    query = f"SELECT {', '.join(f'`{n}`' for n in names)} FROM `{PROJECT}.{bq_dataset}.hostile` ORDER BY id"
    assert [tuple(r.values()) for r in bq_client.query(query).result()] == expected
    # And nothing was harmed: the canaries keep their rows, the dataset holds the destination only
    assert place.counts() == {"users": 3, "x": 3}
    tables = {t.table_id for t in bq_client.list_tables(f"{PROJECT}.{bq_dataset}")}
    assert tables == {"hostile", "_etl_ledger", "_etl_heads"}
