"""`etl-worker dashboard` in a real browser, against a real run on the local stack: a worker serving
the emulators loads a PostgreSQL table (and fails on a missing one), another run is in flight
(its events published by the worker's RunEvents on the emulator), and headless Chromium renders
the page: progress bar, history, table health, charts. A screenshot is saved (path printed)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import bigquery

from devstack.emulators import free_port
from tests.e2e.sources import seed
from tests.e2e.stack import Stack, serving
from tests.ops.browser import dump_dom, screenshot
from tests.ops.history_week import write_week
from tests.ops.runs import RunScript
from worker.commands.dashboard import Dashboard
from worker.events import PubSubEventBus

WAIT_S = 90.0


@pytest.fixture
def dashboard(stack: Stack) -> Iterator[Dashboard]:
    board = Dashboard(stack.settings, port=0, refresh_s=0.5)
    board.start()
    try:
        yield board
    finally:
        board.close()


def wait_data(dashboard: Dashboard, ready: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        data = dashboard.data()
        if ready(data):
            return data
        assert time.monotonic() < deadline, json.dumps(data, default=str)[:3000]
        time.sleep(0.25)


def test_the_dashboard_shows_live_progress_history_and_health_in_a_browser(
    stack: Stack, dashboard: Dashboard, pg_admin: sa.Engine, pg_schema: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = seed("postgresql", pg_admin, pg_schema, 250)
    # Given a committed run and a failed one, through a worker serving the emulators
    with serving(stack.settings):
        stack.publish(source.request("catalog", etl_run_id=601))
        stack.wait_terminal("etl-run-601")
        stack.publish(source.request("catalog", etl_run_id=602, source_table_name="missing"))
        stack.wait_terminal("etl-run-602")
    # And a run in flight: 4,200 of 10,000 rows read
    bus = PubSubEventBus(stack.settings.gcp_project_id, stack.settings.etl_events_topic)
    flying = RunScript(bus, table="customers", data_source_id=8, run_id="etl-run-603")
    flying.started(rows_expected=10_000).progress(4_200, at_s=3.5)
    data = wait_data(dashboard, lambda d: {r["run_id"] for r in d["recent"]} >= {"etl-run-601", "etl-run-602"}
                     and any(r["run_id"] == "etl-run-603" and r["fraction"] == 0.42 for r in d["active"]))
    # Then /api/runs has it all, as JSON over HTTP
    with urllib.request.urlopen(dashboard.url + "api/runs", timeout=30) as response:
        served = json.loads(response.read())
    assert set(served) >= {"active", "ended", "recent", "tables", "daily", "totals"}
    [orders] = [t for t in data["tables"] if t["dest_table"] == "orders"]
    assert (orders["runs"], orders["success_rate"], orders["now"]) == (2, 0.5, "failed")
    assert [d["seconds"] > 0 for d in orders["durations"]] == [True]
    assert sum(d["rows"] for d in data["daily"]) == 250 and data["totals"]["failed"] == 1

    # When a browser loads the page
    dom = dump_dom(dashboard.url)
    # Then it drew the live run's progress bar at 42 %
    assert 'data-ready="true"' in dom
    live = _element(dom, 'data-run-id="etl-run-603"')
    assert 'aria-valuenow="42"' in live and ">42%<" in live and "4,200 / 10,000 rows" in live
    assert "customers" in live and "extracting" in live
    # And the history: committed and failed, the failure with its error
    assert re.search(r'<tr data-run-id="etl-run-601" data-outcome="committed">.*?>250<', dom)
    failed = _element(dom, 'data-run-id="etl-run-602" data-outcome="failed"')
    assert "SourceSchemaError" in failed
    # And the table's health: 50 %, its sparkline, rows per day; and the charts
    health = _element(dom, 'data-table="orders"')
    assert ">50%<" in health and "<polyline" in health and ">failed<" in health
    assert re.search(r'data-rows="250"', dom) and 'aria-label="runs per day by outcome"' in dom
    assert re.search(r'data-kpi="success rate".*?>50%<', dom)
    # And a screenshot for people
    shot = screenshot(dashboard.url, Path(os.environ.get("ETL_SCREENSHOT_DIR", tmp_path)) / "dashboard.png")
    with capsys.disabled():  # shown in a normal run too
        print(f"\ndashboard screenshot: {shot}")


def _element(dom: str, marker: str) -> str:
    """The markup from the element carrying `marker` to the end of its row or block."""
    start = dom.index(marker)
    ends = (dom.find("</tr>", start), dom.find('<div class="run"', start + 1), len(dom))
    end = min(i for i in ends if i > 0)
    return dom[start:end]


def test_a_week_of_history_draws_daily_charts_and_duration_trends(
    stack: Stack, bq_client: bigquery.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a week of runs in the history (one table slowing down, one failing now and then)
    committed = write_week(bq_client, stack.settings.bigquery_dataset)
    board = Dashboard(stack.settings, port=0, refresh_s=0.5)
    board.start()
    try:
        bus = PubSubEventBus(stack.settings.gcp_project_id, stack.settings.etl_events_topic)
        RunScript(bus, table="orders", run_id="etl-run-9999").started(rows_expected=121_000).progress(
            78_650, at_s=26.0)
        data = wait_data(board, lambda d: d["totals"]["committed"] >= committed - 12 and d["active"])
        # Then each day of the period has its bar (the 6 whole UTC days in it have runs whatever the
        # time of day; the partial first and last may not), and the trends say who slows down
        assert len(data["daily"]) == 8 and all(d["rows"] > 0 for d in data["daily"][1:-1])
        trends = {t["dest_table"]: t["trend"] for t in data["tables"]}
        assert trends["invoices"] == "slower" and trends["orders"] == "steady"
        dom = dump_dom(board.url)
        assert dom.count("<g data-day=") == 16  # two charts of 8 days
        assert re.search(r'data-table="invoices".*?<polyline.*?>slower<', dom, re.S)
        assert 'class="dead-lettered"' in dom  # the dead-lettered run in the runs-per-day chart
        where = Path(os.environ.get("ETL_SCREENSHOT_DIR", tmp_path)) / "dashboard-week.png"
        shot = screenshot(board.url, where, size=(1400, 1400))
        with capsys.disabled():
            print(f"\ndashboard screenshot (a week of history): {shot}")
    finally:
        board.close()


def test_the_cli_serves_the_page_and_its_files_and_stops_on_sigterm(stack: Stack) -> None:
    port = free_port()
    env = {**os.environ, **_env(stack)}
    process = subprocess.Popen([sys.executable, "-m", "worker", "dashboard", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    assert response.read() == b"ok\n"
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.2)
        pages = {path: urllib.request.urlopen(base + path, timeout=30) for path in
                 ("/", "/static/app.js", "/static/style.css", "/api/runs")}
        assert "<title>etl-worker dashboard</title>" in pages["/"].read().decode()
        assert pages["/static/app.js"].headers["Content-Type"].startswith("text/javascript")
        assert "default-src 'self'" in pages["/"].headers["Content-Security-Policy"]
        assert json.loads(pages["/api/runs"].read())["active"] == []
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/static/../server.py", timeout=30)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert f"dashboard: http://127.0.0.1:{port}/" in out


def _env(stack: Stack) -> dict[str, str]:
    s = stack.settings
    return {"GCP_PROJECT_ID": s.gcp_project_id, "BIGQUERY_DATASET": s.bigquery_dataset,
            "BIGQUERY_EMULATOR_HOST": s.bigquery_emulator_host or "",
            "PUBSUB_EMULATOR_HOST": s.pubsub_emulator_host or "", "ETL_EVENTS_TOPIC": s.etl_events_topic}
