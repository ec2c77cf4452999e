"""Three related tables in PostgreSQL or MariaDB for jobs: customers ← orders ← order_lines (foreign
keys), and a writer that adds a customer with its order and lines in one transaction, stamped by the
database's own clock."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from google.cloud import bigquery

from tests.conftest import PROJECT
from tests.e2e.sources import SeededSource

PG_DDL = (
    """CREATE TABLE "{s}".customers (id bigint PRIMARY KEY, name text NOT NULL,
       updated_at timestamptz(6) NOT NULL DEFAULT now())""",
    """CREATE TABLE "{s}".orders (id bigint PRIMARY KEY,
       customer_id bigint NOT NULL REFERENCES "{s}".customers (id), amount numeric(12, 2),
       created_at timestamptz(6) NOT NULL DEFAULT now())""",
    """CREATE TABLE "{s}".order_lines (id bigint PRIMARY KEY,
       order_id bigint NOT NULL REFERENCES "{s}".orders (id), sku text NOT NULL, qty integer NOT NULL,
       created_at timestamptz(6) NOT NULL DEFAULT now())""",
)
MYSQL_DDL = (
    """CREATE TABLE `{s}`.customers (id bigint PRIMARY KEY, name varchar(100) NOT NULL,
       updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB""",
    """CREATE TABLE `{s}`.orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
       amount decimal(12, 2), created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
       FOREIGN KEY (customer_id) REFERENCES `{s}`.customers (id)) ENGINE=InnoDB""",
    """CREATE TABLE `{s}`.order_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL,
       sku varchar(20) NOT NULL, qty int NOT NULL,
       created_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
       FOREIGN KEY (order_id) REFERENCES `{s}`.orders (id)) ENGINE=InnoDB""",
)
LINES_PER_ORDER = 2
SINCE = {"historical_start_date": "2000-01-01"}
CUSTOMERS = {"source_table_name": "customers", "dest_table_name": "customers"}
ORDERS = {"source_table_name": "orders", "dest_table_name": "orders"}
LINES = {"source_table_name": "order_lines", "dest_table_name": "order_lines"}
MERGED_CUSTOMERS = {**CUSTOMERS, "load_type": "merge", "timestamp_column": "updated_at", **SINCE}
APPENDED_ORDERS = {**ORDERS, "load_type": "transactional", "timestamp_column": "created_at", **SINCE}
# Jobs of the three tables. mixed: customers merged by key, orders appended by window, lines
# replaced whole; catalog: each replaced whole; windowed: each read by a window of its own cursor.
SHAPES: dict[str, tuple[dict[str, Any], ...]] = {
    "mixed": (MERGED_CUSTOMERS, APPENDED_ORDERS, {**LINES, "load_type": "catalog"}),
    "catalog": tuple({**table, "load_type": "catalog"} for table in (CUSTOMERS, ORDERS, LINES)),
    "windowed": (MERGED_CUSTOMERS, APPENDED_ORDERS,
                 {**LINES, "load_type": "transactional", "timestamp_column": "created_at", **SINCE}),
}


SHOP_TABLES = ("customers", "orders", "order_lines")


def shop_tables(schema: str) -> dict[str, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    return {
        "customers": sa.Table("customers", metadata, sa.Column("id", sa.BigInteger, primary_key=True),
                              sa.Column("name", sa.String(100))),
        "orders": sa.Table("orders", metadata, sa.Column("id", sa.BigInteger, primary_key=True),
                           sa.Column("customer_id", sa.BigInteger), sa.Column("amount", sa.Numeric(12, 2))),
        "order_lines": sa.Table("order_lines", metadata, sa.Column("id", sa.BigInteger, primary_key=True),
                                sa.Column("order_id", sa.BigInteger), sa.Column("sku", sa.String(20)),
                                sa.Column("qty", sa.Integer)),
    }


@dataclass
class Shop:
    source: SeededSource
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def tables(self) -> dict[str, sa.Table]:
        return shop_tables(self.source.schema)

    def add_families(self, count: int, engine: sa.Engine | None = None) -> None:
        """`count` customers, each with an order and its lines, one transaction per family; the
        timestamps are the database's clock (column defaults)."""
        tables = self.tables
        for _ in range(count):
            n = next(self.ids)
            with (engine or self.source.engine).connect() as conn, conn.begin():
                conn.execute(tables["customers"].insert(), {"id": n, "name": f"customer {n}"})
                conn.execute(tables["orders"].insert(), {"id": n, "customer_id": n, "amount": n % 97})
                conn.execute(tables["order_lines"].insert(), [
                    {"id": n * 10 + k, "order_id": n, "sku": f"sku-{k}", "qty": k + 1}
                    for k in range(LINES_PER_ORDER)])

    def job(self, etl_run_id: int, shape: str = "mixed", **third: Any) -> dict[str, Any]:
        """The three-table job of `shape`; `third`: more fields of its third table (order_lines)."""
        body = self.source.request("catalog", etl_run_id=etl_run_id)
        for name in ("source_table_name", "dest_table_name", "load_type"):
            del body[name]
        first, second, last = SHAPES[shape]
        body["tables"] = [first, second, {**last, **third}]
        return body

    def ids_of(self, table: str) -> list[int]:
        column = self.tables[table].c.id
        with self.source.engine.connect() as conn:
            return list(conn.execute(sa.select(column).order_by(column)).scalars())


def seed_shop(dialect: str, engine: sa.Engine, schema: str, families: int) -> Shop:
    with engine.begin() as conn:
        for ddl in PG_DDL if dialect == "postgresql" else MYSQL_DDL:
            conn.execute(sa.text(ddl.format(s=schema)))
    shop = Shop(SeededSource(dialect, engine, schema))
    shop.add_families(families)
    return shop


@contextmanager
def writing_between_statements(shop: Shop) -> Iterator[list[int]]:
    """A concurrent writer, made deterministic: before every statement the worker sends about one
    of the shop's tables (its reflection, COUNT(*), reads through SQLAlchemy), the writer's own
    connection commits a new family in one transaction. Statements opening the snapshot are left
    alone: a commit racing the snapshot's own opening is the late commit that
    ETL_INCREMENTAL_LAG covers (docs/guarantees.md), 0 in these tests. Yields the families written."""
    writer = sa.create_engine(shop.source.engine.url)
    written: list[int] = []

    def write(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        worker = conn.engine is not writer and conn.engine is not shop.source.engine
        if worker and any(name in f"{statement} {params}" for name in SHOP_TABLES):
            shop.add_families(1, writer)
            written.append(len(written) + 1)

    sa.event.listen(sa.Engine, "before_cursor_execute", write)
    try:
        yield written
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", write)
        writer.dispose()


def orphans(client: bigquery.Client, dataset: str) -> dict[str, int]:
    """Child rows in BigQuery whose parent row is not there."""
    def count(child: str, key: str, parent: str) -> int:
        query = (f"SELECT COUNT(*) AS n FROM `{PROJECT}.{dataset}.{child}` AS c "
                 f"LEFT JOIN `{PROJECT}.{dataset}.{parent}` AS p ON c.{key} = p.id WHERE p.id IS NULL")
        return int(next(iter(client.query(query).result()))["n"])

    return {"orders": count("orders", "customer_id", "customers"),
            "order_lines": count("order_lines", "order_id", "orders")}
