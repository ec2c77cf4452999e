"""notify's memory: processed event ids, alerts sent per channel, and each subject's track (failure
streak, last success, open incidents), in one SQLite file under ETL_NOTIFY_STATE_DIR.

Why a local SQLite file: an event's dedupe mark and the incident it opens or closes are stored in one
transaction (never one without the other), a restart finds both, it costs no service, and the
standard library has it. notify runs as one instance (two would both alert), so one writer is all
the file needs; give that instance a persistent volume. BigQuery was the other candidate: a DML
statement per event is seconds of latency and contends with itself on one table. Losing the file
(a volume-less container restarted) costs at most one repeated alert per open incident and no
recovery message for those; no alert is lost, because events are acked only after this commit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from worker.commands.alerting import Incident, Subject, Track

STATE_FILE = "notify.sqlite3"
KEEP_S = 14 * 86_400  # longer than Pub/Sub keeps an unacked message (7 days)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (event_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sent (alert_id TEXT NOT NULL, channel TEXT NOT NULL, at REAL NOT NULL,
                                 PRIMARY KEY (alert_id, channel));
CREATE TABLE IF NOT EXISTS tracks (subject TEXT PRIMARY KEY, data_source_id INTEGER, dest_table TEXT,
                                   track TEXT NOT NULL);
"""


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / STATE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def processed(self, event_id: str) -> bool:
        return self._one("SELECT 1 FROM processed WHERE event_id = ?", (event_id,))

    def was_sent(self, alert_id: str, channel: str) -> bool:
        return self._one("SELECT 1 FROM sent WHERE alert_id = ? AND channel = ?", (alert_id, channel))

    def mark_sent(self, alert_id: str, channel: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?)", (alert_id, channel, time.time()))

    def tracks(self, subjects: Iterable[Subject]) -> dict[Subject, Track]:
        found: dict[Subject, Track] = {}
        with self._lock:
            for subject in subjects:
                row = self._db.execute("SELECT track FROM tracks WHERE subject = ?",
                                       (subject.key,)).fetchone()
                if row:
                    found[subject] = _track(row[0])
        return found

    def open_incidents(self) -> list[tuple[Subject, Incident]]:
        with self._lock:
            rows = self._db.execute("SELECT data_source_id, dest_table, track FROM tracks").fetchall()
        return [(Subject(ds, table), incident) for ds, table, text in rows
                for incident in _track(text).incidents.values()]

    def commit(self, event_id: str, tracks: dict[Subject, Track]) -> None:
        """The event is processed and the tracks are as given: both or neither."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for subject, track in tracks.items():
                    self._db.execute("INSERT OR REPLACE INTO tracks VALUES (?, ?, ?, ?)",
                                     (subject.key, subject.data_source_id, subject.dest_table,
                                      json.dumps(asdict(track))))
                self._db.execute("INSERT OR IGNORE INTO processed VALUES (?, ?)", (event_id, time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def prune(self, now: float | None = None, keep_s: float = KEEP_S) -> None:
        """Forget event ids and sent marks older than `keep_s` (Pub/Sub no longer redelivers them)."""
        cutoff = (time.time() if now is None else now) - keep_s
        with self._lock:
            self._db.execute("DELETE FROM processed WHERE at < ?", (cutoff,))
            self._db.execute("DELETE FROM sent WHERE at < ?", (cutoff,))

    def _one(self, sql: str, params: tuple[str, ...]) -> bool:
        with self._lock:
            return self._db.execute(sql, params).fetchone() is not None


def _track(text: str) -> Track:
    data = json.loads(text)
    incidents = {kind: Incident(**value) for kind, value in data.get("incidents", {}).items()}
    return Track(failures=int(data.get("failures", 0)), last_success_at=data.get("last_success_at"),
                 incidents=incidents)
