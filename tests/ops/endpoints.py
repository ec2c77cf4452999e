"""Real local endpoints for notify: an HTTP server standing in for Slack, an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from devstack.emulators import free_port

SLACK_PATH = "/services/T000/B000/sEcReT-WeBhOoK-tOkEn"


class SlackStandIn:
    """Answers POSTs on SLACK_PATH like Slack's incoming webhook ('ok'); `fail_next` makes the next
    requests answer 500. Every request is kept (payload and whether it was accepted)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.fail_next = 0
        self._lock = threading.Lock()
        self._event = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    failing = outer.fail_next > 0 or self.path != SLACK_PATH
                    if failing:
                        outer.fail_next = max(0, outer.fail_next - 1)
                        outer.refused += 1
                    else:
                        outer.received.append(json.loads(body))
                    outer._event.notify_all()
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"oops" if failing else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{SLACK_PATH}"

    def texts(self) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.received]

    def wait(self, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        with self._lock:
            if not self._event.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise AssertionError(f"Slack got {len(self.received)} message(s), wanted {count}")
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.raw.append(envelope.content)
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            self.lock.notify_all()
        return "250 Message accepted for delivery"


class SmtpStandIn:
    """aiosmtpd on 127.0.0.1; with `tls_dir`, STARTTLS and AUTH required (user/password given)."""

    def __init__(self, tls_dir: Path | None = None, user: str = "", password: str = "") -> None:
        self.inbox = _Inbox()
        self.port = free_port()
        self.cert: Path | None = None
        options: dict[str, Any] = {}
        if tls_dir is not None:
            import ssl

            self.cert, key = self_signed(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)

            def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
                ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                    user.encode(), password.encode())
                return AuthResult(success=ok, handled=False)

            options = {"tls_context": context, "require_starttls": True, "auth_required": True,
                       "auth_require_tls": True, "authenticator": check}
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def wait(self, count: int, timeout_s: float = 60.0) -> list[EmailMessage]:
        with self.inbox.lock:
            if not self.inbox.lock.wait_for(lambda: len(self.inbox.messages) >= count, timeout_s):
                raise AssertionError(f"SMTP got {len(self.inbox.messages)} message(s), wanted {count}")
            return list(self.inbox.messages)

    def close(self) -> None:
        self._controller.stop(no_assert=True)


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


@dataclass
class Endpoints:
    slack: SlackStandIn
    smtp: SmtpStandIn

    def env(self) -> dict[str, str]:
        return {"ETL_ALERT_SLACK_WEBHOOK_URL": self.slack.url, "ETL_ALERT_SMTP_HOST": "127.0.0.1",
                "ETL_ALERT_SMTP_PORT": str(self.smtp.port), "ETL_ALERT_SMTP_SECURITY": "none",
                "ETL_ALERT_EMAIL_FROM": "etl@example.test",
                "ETL_ALERT_EMAIL_TO": "ops@example.test, dba@example.test"}


def endpoints() -> Iterator[Endpoints]:
    both = Endpoints(SlackStandIn(), SmtpStandIn())
    try:
        yield both
    finally:
        both.slack.close()
        both.smtp.close()
