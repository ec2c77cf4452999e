"""A known password goes through representative runs and must appear nowhere: not in a log line
(JSON or text, subprocess stderr or in-process), not in an event, not in an exception text, not in
`replay`'s output. Its percent-encoded forms (as in a connection URL) are checked too.

Runs: the one-shot `python -m worker run` (PostgreSQL success, wrong password to PostgreSQL and to
MariaDB, unreachable host) and the serve loop (MariaDB through password_file, PostgreSQL through
password_env, a permanent failure, a transient one that ends in the dead-letter topic, then
`replay`). PostgreSQL is a throwaway cluster that checks passwords (the machine's trusts 127.0.0.1).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa

from devstack.emulators import Emulator
from tests import forkserver
from tests.conftest import unique
from tests.e2e.sources import SeededSource, seed
from tests.e2e.stack import Stack, serving, settings_env, settings_from_env
from tests.e2e.test_replay import wait_dead_letters
from tests.password_postgres import PasswordPostgres
from worker.logs import JsonFormatter

PASSWORD = "Leak-Canary:9@pw/%x"
FORMS = (PASSWORD, quote(PASSWORD, safe=""), quote_plus(PASSWORD))
OTHER_PASSWORD = "Another-pw-2"


def assert_no_password(where: str, text: str) -> None:
    for form in FORMS:
        assert form not in text, f"password ({form!r}) found in {where}"


@pytest.fixture
def pg_users(password_pg: PasswordPostgres) -> Iterator[SeededSource]:
    """`orders` in a PostgreSQL that checks passwords; role `<schema>_ok` has PASSWORD, `_other` not."""
    schema = unique("s")
    admin = password_pg.admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        for user, password in ((f"{schema}_ok", PASSWORD), (f"{schema}_other", OTHER_PASSWORD)):
            conn.execute(sa.text(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
            conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {user}"))
    source = seed("postgresql", admin, schema, 30)
    with admin.connect() as conn:
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {schema}_ok"))
    try:
        yield source
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
            for user in (f"{schema}_ok", f"{schema}_other"):
                conn.execute(sa.text(f"DROP ROLE {user}"))
        admin.dispose()


@pytest.fixture
def mysql_users(mysql_admin: sa.Engine, mysql_db: str) -> Iterator[SeededSource]:
    source = seed("mysql", mysql_admin, mysql_db, 30)
    users = ((f"{mysql_db}_ok", PASSWORD), (f"{mysql_db}_x", OTHER_PASSWORD))
    with mysql_admin.connect() as conn:
        for user, password in users:
            conn.execute(sa.text(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(sa.text(f"GRANT SELECT ON `{mysql_db}`.* TO '{user}'@'127.0.0.1'"))
    try:
        yield source
    finally:
        with mysql_admin.connect() as conn:
            for user, _ in users:
                conn.execute(sa.text(f"DROP USER '{user}'@'127.0.0.1'"))


def request(source: SeededSource, etl_run_id: int, port: int, user: str, **params: Any) -> dict[str, Any]:
    body = source.request("catalog", etl_run_id=etl_run_id, dest_table_name=f"orders_{etl_run_id}")
    body["connection_params"].update(host="127.0.0.1", port=port, username=user, **params)
    if "password" not in params:
        body["connection_params"].pop("password", None)
    return body


def one_shot(env: dict[str, str], body: dict[str, Any], tmp_path: Path, *flags: str) -> str:
    path = tmp_path / f"request-{body['etl_run_id']}.json"
    path.write_text(json.dumps(body))
    result = forkserver.run([sys.executable, "-m", "worker", *flags, "run", "--request", str(path)],
                            env={**os.environ, **env}, timeout=120)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events and events[-1]["run_id"] == f"etl-run-{body['etl_run_id']}", result.stderr
    return result.stdout + result.stderr


def test_a_known_password_appears_in_no_log_event_error_or_replay_output(
    pubsub_emulator: Emulator, bq_emulator: Emulator, bq_dataset: str, pg_users: SeededSource,
    mysql_users: SeededSource, password_pg: PasswordPostgres, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = settings_env(pubsub_emulator.host_port, bq_emulator.host_port, bq_dataset,
                       ETL_MAX_RETRIES=1, ETL_PASSWORD_FILE_DIRS=str(tmp_path))
    pg, my, pg_port = pg_users, mysql_users, password_pg.port
    pg_ok, pg_other, my_ok, my_other = (f"{pg.schema}_ok", f"{pg.schema}_other",
                                        f"{my.schema}_ok", f"{my.schema}_x")

    # Given one-shot runs that succeed and that fail, with the password in the request
    outputs = {
        "pg ok (json logs)": one_shot(env, request(pg, 1, pg_port, pg_ok, password=PASSWORD), tmp_path),
        "pg wrong password": one_shot(env, request(pg, 2, pg_port, pg_other, password=PASSWORD), tmp_path,
                                      "--no-json-logs"),
        "mariadb wrong password": one_shot(env, request(my, 3, 3306, my_other, password=PASSWORD),
                                           tmp_path),
        "unreachable": one_shot(env, request(pg, 4, 1, pg_ok, password=PASSWORD), tmp_path,
                                "--no-json-logs"),
    }
    assert '"event_type": "run.completed"' in outputs["pg ok (json logs)"].replace('":"', '": "')
    assert "SourceAuthError" in outputs["pg wrong password"]
    assert "SourceAuthError" in outputs["mariadb wrong password"]
    assert "SourceConnectionError" in outputs["unreachable"]

    # And runs through the serve loop, logged through the production formatter
    (tmp_path / "mariadb").write_text(PASSWORD + "\n")
    monkeypatch.setenv("ETL_SECRET_LEAK_TEST", PASSWORD)
    stack = Stack(settings_from_env(env))
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        with serving(stack.settings):
            stack.publish(request(my, 11, 3306, my_ok, password_file=str(tmp_path / "mariadb")))
            stack.publish(request(pg, 12, pg_port, pg_ok, password_env="ETL_SECRET_LEAK_TEST"))
            stack.publish(request(pg, 13, pg_port, pg_ok, password=PASSWORD) | {"source_table_name": "gone"})
            stack.publish(request(pg, 14, 1, pg_ok, password=PASSWORD))
            outcomes = {n: stack.wait_terminal(f"etl-run-{n}")[0] for n in (11, 12, 13)}
            wait_dead_letters(stack, 1)
    finally:
        logging.getLogger().removeHandler(handler)
    assert [outcomes[n]["event_type"] for n in (11, 12, 13)] == ["run.completed", "run.completed",
                                                                 "run.failed"]

    # When the operator looks at the dead letter and would replay it
    replay = [forkserver.run([sys.executable, "-m", "worker", "replay", *args], env={**os.environ, **env},
                             timeout=120)
              for args in ((), ("--all", "--dry-run"))]
    assert all("etl-run-14" in result.stdout for result in replay), replay[0].stdout

    # Then the password is nowhere
    for name, text in outputs.items():
        assert_no_password(f"one-shot run {name!r}", text)
    assert_no_password("serve log lines", lines.getvalue())
    for record in caplog.records:
        assert_no_password(f"log record {record.name}", record.getMessage())
        if record.exc_info:
            assert_no_password("exception text", logging.Formatter().formatException(record.exc_info))
    assert_no_password("events", json.dumps(stack.pull_events()))
    for result in replay:
        assert_no_password("replay output", result.stdout + result.stderr)
    assert "SourceConnectionError" in lines.getvalue()  # the lines were really captured
