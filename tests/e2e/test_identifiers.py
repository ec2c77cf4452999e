"""Customers' real identifiers on PostgreSQL, MariaDB and SQLite, in every load mode: a schema and a
table with spaces, capitals, dashes and non-ASCII letters; columns named as applications name them
(`Order ID`, `Unit Price`, `größe`, `item-code`, `123start`, `order`); a column added between two runs;
views and partitioned tables. Each run goes through the real runner, source and BigQuery emulator
(one-shot handler: the transport is not the point here), and BigQuery must equal the source."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery
from sqlalchemy.dialects import mysql

from tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, PROJECT
from tests.e2e.oneshot import RunOnce, run_once
from tests.e2e.sources import normalise

TABLE = "Order Lines-ä"
SOURCE_COLUMNS = ("Order ID", "Unit Price", "größe", "item-code", "123start", "order", "Updated At")
BQ_COLUMNS = ("order_id", "unit_price", "grosse", "item_code", "_123start", "order", "updated_at")
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass
class Awkward:
    """An awkwardly named table in one dialect, and how to reach it."""

    dialect: str
    engine: sa.Engine
    schema: str | None
    connection_params: dict[str, Any]

    def table(self, name: str = TABLE, extra: tuple[sa.Column[Any], ...] = ()) -> sa.Table:
        when = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql")
        return sa.Table(
            name, sa.MetaData(), sa.Column("Order ID", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("Unit Price", sa.Numeric(10, 2)), sa.Column("größe", sa.Text),
            sa.Column("item-code", sa.String(20)), sa.Column("123start", sa.Integer),
            sa.Column("order", sa.Integer), sa.Column("Updated At", when), *extra, schema=self.schema,
        )

    def rows(self, table: sa.Table) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [normalise(tuple(r)) for r in conn.execute(sa.select(table).order_by(table.c["Order ID"]))]

    def stamp(self, value: datetime) -> datetime:
        return value if self.dialect == "postgresql" else value.replace(tzinfo=None)  # naive UTC

    def insert(self, table: sa.Table, first: int, count: int, at: datetime, **extra: Any) -> None:
        rows = [{"Order ID": i, "Unit Price": Decimal(i * 37 % 1000) / 10, "größe": f"g-{i} ✓",
                 "item-code": f"IC-{i}", "123start": i % 7, "order": i, "Updated At": self.stamp(at),
                 **extra} for i in range(first, first + count)]
        with self.engine.begin() as conn:
            conn.execute(table.insert(), rows)

    def request(self, load_type: str, table: str = TABLE, **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "data_source_id": 5, "source_type": self.dialect, "connection_params": self.connection_params,
            "schema_name": self.schema, "source_table_name": table, "dest_table_name": "order_lines",
            "load_type": load_type,
        }
        if load_type != "catalog":
            body.update(timestamp_column="Updated At", historical_start_date="2020-01-01")
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def awkward(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Awkward]:
    suffix = uuid.uuid4().hex[:6]
    if request.param == "sqlite":
        path = tmp_path / "awkward.sqlite"
        engine = sa.create_engine(f"sqlite:///{path}")
        yield Awkward("sqlite", engine, None, {"database": str(path)})
        engine.dispose()
        return
    url = PG_ADMIN_URL if request.param == "postgresql" else MYSQL_ADMIN_URL
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    schema = f"Sales Dept-ä {suffix}"
    quoted = admin.dialect.identifier_preparer.quote(schema)
    charset = " CHARACTER SET utf8mb4" if request.param == "mysql" else ""
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {quoted}{charset}")
    params = {"host": admin.url.host, "port": admin.url.port, "username": admin.url.username,
              "password": admin.url.password or "",
              "database": schema if request.param == "mysql" else admin.url.database}
    try:
        yield Awkward(request.param, admin, schema, params)
    finally:
        cascade = " CASCADE" if request.param == "postgresql" else ""
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {quoted}{cascade}")
        admin.dispose()


def bq_table(client: bigquery.Client, dataset: str) -> bigquery.Table:
    return client.get_table(f"{PROJECT}.{dataset}.order_lines")


def bq_rows(client: bigquery.Client, dataset: str, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    names = ", ".join(f"`{c}`" for c in columns)
    query = f"SELECT {names} FROM `{PROJECT}.{dataset}.order_lines` ORDER BY `order_id`"
    return [normalise(tuple(r.values())) for r in client.query(query).result()]


@pytest.mark.parametrize("load_type", ["catalog", "transactional", "merge"])
def test_awkward_names_load_in_every_mode_and_a_new_column_maps_by_the_same_rule(
    awkward: Awkward, run_once: RunOnce, bq_client: bigquery.Client, bq_dataset: str, load_type: str
) -> None:
    # Given an awkwardly named table in an awkwardly named schema
    table = awkward.table()
    table.create(awkward.engine)
    awkward.insert(table, 1, 20, T0)
    # When a first run loads it
    events = run_once(awkward.request(load_type), "run-1")
    # Then BigQuery has every column under its rule name, the source names kept where people look
    assert events[-1].event_type == "run.completed"
    started = events[0]
    assert started.event_type == "run.started"
    assert started.column_names == dict(zip(SOURCE_COLUMNS, BQ_COLUMNS, strict=True))
    schema = bq_table(bq_client, bq_dataset).schema
    assert [f.name for f in schema] == list(BQ_COLUMNS)
    described = {f.name: f.description for f in schema}
    assert described["unit_price"] == "Source column: Unit Price" and described["order"] is None
    assert bq_rows(bq_client, bq_dataset, BQ_COLUMNS) == awkward.rows(table)

    # When a column named as applications name them appears, rows change and new ones arrive
    with awkward.engine.begin() as conn:
        quote = awkward.engine.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {_qualified(awkward, quote)} ADD COLUMN {quote('Discount %')} "
                             "INTEGER")
    wider = awkward.table(extra=(sa.Column("Discount %", sa.Integer),))
    later = datetime.now(UTC)  # after the first window's high, before the second's (the same clock)
    awkward.insert(wider, 21, 5, later, **{"Discount %": 15})
    run_once(awkward.request(load_type), "run-2")
    # Then it lands in one new column, named by the same rule, on every mode
    assert [f.name for f in bq_table(bq_client, bq_dataset).schema] == [*BQ_COLUMNS, "discount_pct"]
    expected = awkward.rows(wider)
    if load_type == "catalog":
        assert bq_rows(bq_client, bq_dataset, (*BQ_COLUMNS, "discount_pct")) == expected
    else:  # the first run's rows were loaded before the column existed: NULL there
        got = bq_rows(bq_client, bq_dataset, (*BQ_COLUMNS, "discount_pct"))
        assert got == [(*row[:-1], None) if row[0] <= 20 else row for row in expected]


def _qualified(awkward: Awkward, quote: Any) -> str:
    return f"{quote(awkward.schema)}.{quote(TABLE)}" if awkward.schema else quote(TABLE)


def test_two_columns_on_one_bigquery_name_fail_permanently_before_anything_is_created(
    awkward: Awkward, bq_dataset: str, bq_client: bigquery.Client, run_once: RunOnce,
) -> None:
    twins = sa.Table("twins", sa.MetaData(), sa.Column("Unit Price", sa.Integer),
                     sa.Column("unit_price", sa.Integer), schema=awkward.schema)
    twins.create(awkward.engine)
    body = awkward.request("catalog", table="twins", dest_table_name="twins")
    failed = run_once(body, "run-twins-1")[-1]
    assert failed.event_type == "run.failed"
    assert failed.error.type == "ColumnNameError" and not failed.error.retryable
    assert "'Unit Price' and 'unit_price'" in failed.error.message
    assert not [d for d in bq_client.list_datasets() if d.dataset_id == bq_dataset]  # nothing made
    # And the request's column_names settles it
    run_once({**body, "column_names": {"unit_price": "unit_price_2"}}, "run-twins-2")
    assert [f.name for f in bq_client.get_table(f"{PROJECT}.{bq_dataset}.twins").schema] == [
        "unit_price", "unit_price_2"]


def test_views_load_like_tables(awkward: Awkward, run_once: RunOnce, bq_client: bigquery.Client,
                                bq_dataset: str) -> None:
    table = awkward.table()
    table.create(awkward.engine)
    awkward.insert(table, 1, 9, T0)
    quote = awkward.engine.dialect.identifier_preparer.quote
    view = "Open Lines (view)"
    qualified_view = f"{quote(awkward.schema)}.{quote(view)}" if awkward.schema else quote(view)
    with awkward.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE VIEW {qualified_view} AS SELECT * FROM {_qualified(awkward, quote)}")
    run_once(awkward.request("catalog", table=view), "run-view-1")
    assert bq_rows(bq_client, bq_dataset, BQ_COLUMNS) == awkward.rows(table)
    # A view has no primary key: merge names its key
    run_once(awkward.request("merge", table=view, primary_key=["Order ID"], dest_table_name="order_lines_m"),
        "run-view-2")
    count = bq_client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.{bq_dataset}.order_lines_m`").result()
    assert next(iter(count))["n"] == 9


PARTITIONED = {
    "postgresql": ('CREATE TABLE {t} ("Order ID" bigint, "Updated At" timestamptz, note text) '
                   'PARTITION BY RANGE ("Updated At")',
                   ["CREATE TABLE {p1} PARTITION OF {t} FOR VALUES FROM ('2000-01-01') TO ('2024-06-01')",
                    "CREATE TABLE {p2} PARTITION OF {t} FOR VALUES FROM ('2024-06-01') TO ('2100-01-01')"]),
    "mysql": ("CREATE TABLE {t} (`Order ID` bigint, `Updated At` datetime(6), note text) "
              "PARTITION BY HASH(`Order ID`) PARTITIONS 4", []),
}


@pytest.mark.parametrize("awkward", sorted(PARTITIONED), indirect=True)  # SQLite has no partitions
@pytest.mark.parametrize("load_type", ["catalog", "transactional"])
def test_partitioned_tables_load_like_tables(awkward: Awkward, run_once: RunOnce, bq_client: bigquery.Client,
                                            bq_dataset: str, load_type: str) -> None:
    quote = awkward.engine.dialect.identifier_preparer.quote
    schema = awkward.schema
    assert schema is not None  # PostgreSQL and MariaDB: both have schemas

    def qualified(name: str) -> str:
        return f"{quote(schema)}.{quote(name)}"

    create, parts = PARTITIONED[awkward.dialect]
    with awkward.engine.begin() as conn:
        conn.exec_driver_sql(create.format(t=qualified("Parted Lines")))
        for number, part in enumerate(parts, start=1):
            names = {"t": qualified("Parted Lines"), f"p{number}": qualified(f"p{number}")}
            conn.exec_driver_sql(part.format(**names))
    parted = sa.Table("Parted Lines", sa.MetaData(), autoload_with=awkward.engine, schema=awkward.schema)
    rows = [{"Order ID": i, "Updated At": awkward.stamp(T0 + timedelta(days=20 * i)), "note": f"n{i}"}
            for i in range(1, 13)]
    with awkward.engine.begin() as conn:
        conn.execute(parted.insert(), rows)
    run_once(awkward.request(load_type, table="Parted Lines", dest_table_name="order_lines"), "run-parted")
    assert bq_rows(bq_client, bq_dataset, ("order_id", "updated_at", "note")) == awkward.rows(parted)


__all__ = ["run_once"]  # the fixture, imported for the tests above
