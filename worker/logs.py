"""Logging: one line per state change, JSON shaped for Cloud Logging, secrets redacted everywhere.

- `configure(level, json_logs)` installs one handler on the root logger.
- `log_context(run_id=..., message_id=...)` puts ids on every line logged inside the block
  (context variables, so each callback thread has its own).
- `REDACTOR` replaces every registered secret (request passwords) with "***" in log lines, in
  exception texts, and in event error messages (`redact()`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

_LABELS: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("etl_log_labels", default={})  # noqa: B039
# user:password@host in URLs and password=... pairs, whatever the secret is.
_URL_PASSWORD = re.compile(r"(?P<pre>[a-z0-9+.-]+://[^:/@\s]+:)(?P<secret>[^@\s]+)(?P<post>@)", re.I)
_KEY_VALUE_PASSWORD = re.compile(
    r"(?P<pre>\b(?:password|passwd|pwd|token|secret)\b\s*[=:]\s*['\"]?)(?P<secret>[^\s'\",;&]+)", re.I
)
MASK = "***"


class Redactor:
    """Knows the secrets seen so far and masks them in any text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, secret: str | None) -> None:
        """Mask `secret` from now on, also as it appears percent-encoded in a URL."""
        if secret and len(secret) >= 3:  # masking 1-2 characters would garble every line
            with self._lock:
                self._secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_PASSWORD.sub(lambda m: m["pre"] + MASK + m["post"], text)
        return _KEY_VALUE_PASSWORD.sub(lambda m: m["pre"] + MASK, text)


REDACTOR = Redactor()


def redact(text: str) -> str:
    return REDACTOR.redact(text)


@contextlib.contextmanager
def log_context(**labels: str | int | None) -> Iterator[None]:
    merged = {**_LABELS.get(), **{k: str(v) for k, v in labels.items() if v is not None}}
    token = _LABELS.set(merged)
    try:
        yield
    finally:
        _LABELS.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.labels = _LABELS.get()
        return True


class JsonFormatter(logging.Formatter):
    """Cloud Logging's structured format: severity, message, labels, timestamp, source location."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": record.levelname,
            "message": redact(record.getMessage()),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
            "logging.googleapis.com/labels": getattr(record, "labels", {}),
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname, "line": record.lineno, "function": record.funcName,
            },
        }
        payload.update(getattr(record, "labels", {}))
        if record.exc_info:
            payload["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(labels_text)s")

    def format(self, record: logging.LogRecord) -> str:
        labels = getattr(record, "labels", {})
        record.labels_text = "".join(f" {k}={v}" for k, v in labels.items())
        return redact(super().format(record))


def configure(level: str = "INFO", json_logs: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The client libraries are chatty at INFO about every lease and stream.
    for noisy in ("google.cloud.pubsub_v1", "google.api_core", "urllib3", "google.auth"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
