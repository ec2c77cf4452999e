"""`etl-worker dashboard`: a page of live runs, the run history and per-table health.

Standard library HTTP (`ThreadingHTTPServer`) serving a static page shipped in the package
(static/: HTML, CSS and JavaScript, no build step, nothing fetched from elsewhere) and its data
at `/api/runs` (model.snapshot). Live runs come from the events topic through a subscription of
the dashboard's own (as `watch`: unique, deleted on exit, expiring after a day should the process
die); the history from `_etl_runs`, re-read every HISTORY_REFRESH_S in the background.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message

from worker.commands.dashboard.model import LiveBoard, snapshot
from worker.commands.runs import Filters, recent_runs
from worker.commands.watch import create_subscription, delete_subscription
from worker.history import HistoryTable, RunRecord
from worker.logs import redact
from worker.settings import Settings
from worker.sinks import bigquery_client

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
HISTORY_REFRESH_S = 10.0
DEFAULT_SINCE = timedelta(days=7)
MAX_RECORDS = 10_000
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store"}


class HistoryCache:
    """The history's records for the period, re-read in the background."""

    def __init__(self, history: HistoryTable, since: datetime | None, refresh_s: float) -> None:
        self._history = history
        self._fixed_since = since
        self._refresh_s = refresh_s
        self._records: list[RunRecord] = []
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard-history", daemon=True)

    @property
    def since(self) -> datetime:
        return self._fixed_since or datetime.now(UTC) - DEFAULT_SINCE

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def records(self) -> list[RunRecord]:
        with self._lock:
            return list(self._records)

    def refresh(self) -> None:
        try:
            records = recent_runs(self._history, Filters(since=self.since, limit=MAX_RECORDS))
        except Exception as exc:  # shown on the page; the live part goes on
            self.error = f"run history not readable: {redact(str(exc))[:300]}"
            log.warning("%s", self.error)
            return
        with self._lock:
            self._records, self.error = records, None

    def _loop(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self._refresh_s):
                return


class Dashboard:
    """The server, the live subscription and the history refresher; `start`, then `close`."""

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 8080,
                 since: datetime | None = None, refresh_s: float = HISTORY_REFRESH_S) -> None:
        client = bigquery_client.make_bigquery_client(settings.gcp_project_id,
                                                      settings.bigquery_emulator_host)
        history = HistoryTable(client, settings.gcp_project_id, settings.bigquery_dataset,
                               bigquery_client.api_retry(settings.bigquery_emulator_host))
        self.settings = settings
        self.board = LiveBoard()
        self.history = HistoryCache(history, since, refresh_s)
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._subscription = ""
        self._stream: Any = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}/"

    def data(self) -> dict[str, Any]:
        return snapshot(self.board, self.history.records(), self.history.since, datetime.now(UTC),
                        self.history.error)

    def start(self) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        self._subscription = create_subscription(self._subscriber, self.settings)
        self._stream = self._subscriber.subscribe(self._subscription, self._on_event)
        self.history.start()
        threading.Thread(target=self._server.serve_forever, name="dashboard-http", daemon=True).start()
        log.info("dashboard at %s", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.history.stop()
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(Exception):
                self._stream.result(timeout=10)
        if self._subscriber is not None:
            delete_subscription(self._subscriber, self._subscription)

    def _on_event(self, message: Message) -> None:
        with contextlib.suppress(ValueError):
            event = json.loads(bytes(message.data))
            if isinstance(event, dict):
                self.board.add(event)
        message.ack()


def _handler(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    files = {f"/static/{p.name}": p for p in STATIC.iterdir() if p.suffix in _TYPES}
    files["/"] = STATIC / "index.html"

    class Handler(BaseHTTPRequestHandler):
        server_version = "etl-worker-dashboard"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/api/runs":
                self._send(200, "application/json", json.dumps(dashboard.data(), default=str).encode())
            elif path == "/healthz":
                self._send(200, "text/plain; charset=utf-8", b"ok\n")
            elif path in files:
                self._send(200, _TYPES[files[path].suffix], files[path].read_bytes())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in _HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    return Handler


def serve_dashboard(settings: Settings, *, host: str, port: int, since: datetime | None,
                    stop: threading.Event) -> int:
    dashboard = Dashboard(settings, host=host, port=port, since=since)
    dashboard.start()
    print(f"dashboard: {dashboard.url}", flush=True)
    try:
        stop.wait()
    finally:
        dashboard.close()
    return 0
