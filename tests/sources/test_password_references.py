"""Password references against real servers that check passwords: env → PostgreSQL, file → MariaDB."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import unique
from tests.password_postgres import PasswordPostgres
from worker.classify import classify
from worker.errors import SourceAuthError
from worker.messages import EtlRunRequest, decode_request
from worker.secrets import SecretPolicy, SecretResolver
from worker.sources import get_source

PASSWORD = "Ref-pw:5@z/%"


def request(source_type: str, params: dict[str, Any], schema: str) -> EtlRunRequest:
    return decode_request(json.dumps({
        "data_source_id": 1, "source_type": source_type, "connection_params": params,
        "schema_name": schema, "source_table_name": "t", "dest_table_name": "t", "load_type": "catalog",
    }).encode())


def count_rows(resolver: SecretResolver, req: EtlRunRequest) -> int:
    with get_source(req.source_type, resolver).snapshot(req) as snapshot:
        return snapshot.count_rows(None)


@pytest.fixture
def pg_user(password_pg: PasswordPostgres) -> Iterator[tuple[str, str]]:
    """A login role with PASSWORD and a schema holding t (3 rows) it may read."""
    user, schema = unique("u"), unique("s")
    admin = password_pg.admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'"))
        conn.execute(sa.text(f"CREATE SCHEMA {schema} AUTHORIZATION {user}"))
        conn.execute(sa.text(f"CREATE TABLE {schema}.t AS SELECT generate_series(1, 3) AS id"))
        conn.execute(sa.text(f"GRANT SELECT ON {schema}.t TO {user}"))
    try:
        yield user, schema
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            conn.execute(sa.text(f"DROP ROLE {user}"))
        admin.dispose()


def test_password_env_reaches_postgresql(password_pg: PasswordPostgres, pg_user: tuple[str, str]) -> None:
    user, schema = pg_user
    params = {"host": "127.0.0.1", "port": password_pg.port, "database": "postgres", "username": user,
              "password_env": "ETL_SECRET_SHOP"}
    good = SecretResolver(SecretPolicy(), environ={"ETL_SECRET_SHOP": PASSWORD})
    assert count_rows(good, request("postgresql", params, schema)) == 3
    # a wrong value behind the reference is refused by the server: permanent, and not shown
    wrong = SecretResolver(SecretPolicy(), environ={"ETL_SECRET_SHOP": PASSWORD + "x"})
    with pytest.raises(Exception) as caught:
        count_rows(wrong, request("postgresql", params, schema))
    error = classify(caught.value)
    assert isinstance(error, SourceAuthError) and PASSWORD not in str(error)


def test_password_file_reaches_mariadb(mysql_admin: sa.Engine, mysql_db: str, tmp_path: Path) -> None:
    user = unique("u")
    with mysql_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'"))
        conn.execute(sa.text(f"GRANT SELECT ON `{mysql_db}`.* TO '{user}'@'127.0.0.1'"))
        conn.execute(sa.text(f"CREATE TABLE `{mysql_db}`.t (id int)"))
        conn.execute(sa.text(f"INSERT INTO `{mysql_db}`.t VALUES (1), (2)"))
    try:
        (tmp_path / "shop").write_text(PASSWORD + "\n")
        params = {"host": "127.0.0.1", "port": 3306, "database": mysql_db, "username": user,
                  "password_file": str(tmp_path / "shop")}
        resolver = SecretResolver(SecretPolicy(file_dirs=(tmp_path,)), environ={})
        assert count_rows(resolver, request("mysql", params, mysql_db)) == 2
    finally:
        with mysql_admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'127.0.0.1'"))
