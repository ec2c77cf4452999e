"""Where alerts go: a Slack incoming webhook and e-mail over SMTP (standard library only).

A send either succeeds or raises SendError (notify then nacks the event, so Pub/Sub brings it back).
The webhook URL and the SMTP password are secrets: they are registered with the log redactor, and
no error text carries them (the URL is never put in an exception or a log line).
"""

from __future__ import annotations

import email.policy
import json
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from pydantic import SecretStr

from worker.commands.alerting import Alert
from worker.logs import REDACTOR, redact
from worker.settings import Settings

_ICONS = {("open", "failure"): ":rotating_light:", ("open", "quality"): ":warning:",
          ("open", "slow"): ":hourglass_flowing_sand:", ("resolved", "failure"): ":white_check_mark:",
          ("resolved", "quality"): ":white_check_mark:", ("resolved", "slow"): ":white_check_mark:"}
_COLORS = {"open": "#d93f0b", "resolved": "#2da44e"}
DEFAULT_PORTS = {"ssl": 465, "starttls": 587, "none": 25}
# Python folds a subject that just fits on a line of its own before its first word (a leading space
# in some clients): keep header lines whole up to RFC 5322's hard limit instead.
_POLICY = email.policy.default.clone(max_line_length=998)


class SendError(Exception):
    """An alert could not be delivered (the text names the channel, never its secret)."""


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack's incoming-webhook JSON: a text (notifications, fallbacks) and a coloured attachment."""
    icon = _ICONS[(alert.status, alert.kind)]
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in alert.details]
    return {
        "text": f"{icon} {alert.title}",
        "attachments": [{"color": _COLORS[alert.status], "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{alert.title}*"}},
            *({"type": "section", "fields": fields[i:i + 10]} for i in range(0, len(fields), 10)),
        ]}],
    }


def email_message(alert: Alert, sender: str, recipients: Sequence[str]) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    prefix = "[etl resolved]" if alert.status == "resolved" else "[etl alert]"
    message["Subject"] = f"{prefix} {alert.title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=alert.alert_id, domain="etl-worker")
    width = max((len(k) for k, _ in alert.details), default=0)
    body = [alert.title, "", *(f"{k.ljust(width)}  {v}" for k, v in alert.details), "",
            "-- etl-worker notify"]
    message.set_content("\n".join(body) + "\n")
    return message


class SlackChannel:
    name = "slack"

    def __init__(self, webhook_url: SecretStr, timeout_s: float) -> None:
        self._url = webhook_url
        self._timeout_s = timeout_s
        url = webhook_url.get_secret_value()
        for part in (url, urllib.parse.urlsplit(url).path, urllib.parse.urlsplit(url).query):
            REDACTOR.register(part if len(part) > 8 else None)  # the path is the token; "/" is not

    def send(self, alert: Alert) -> None:
        data = json.dumps(slack_payload(alert)).encode()
        request = urllib.request.Request(self._url.get_secret_value(), data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise SendError(f"Slack webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SendError(f"Slack webhook not reachable: {redact(str(reason))}") from None


class EmailChannel:
    name = "email"

    def __init__(self, settings: Settings) -> None:
        if not (settings.etl_alert_email_from and settings.etl_alert_email_to):
            raise ValueError("e-mail alerts need ETL_ALERT_EMAIL_FROM and ETL_ALERT_EMAIL_TO")
        self._host = settings.etl_alert_smtp_host or "localhost"
        self._security = settings.etl_alert_smtp_security
        self._port = settings.etl_alert_smtp_port or DEFAULT_PORTS[self._security]
        self._username = settings.etl_alert_smtp_username
        self._password = settings.etl_alert_smtp_password
        self._ca_file = settings.etl_alert_smtp_ca_file
        self._timeout_s = settings.etl_alert_timeout_s
        self._sender = settings.etl_alert_email_from
        self._recipients = [r.strip() for r in settings.etl_alert_email_to.split(",") if r.strip()]
        if self._password:
            REDACTOR.register(self._password.get_secret_value())

    def send(self, alert: Alert) -> None:
        message = email_message(alert, self._sender, self._recipients)
        try:
            with self._connect() as smtp:
                if self._username and self._password:
                    smtp.login(self._username, self._password.get_secret_value())
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise SendError(f"e-mail via {self._host}:{self._port} failed: "
                            f"{type(exc).__name__}: {redact(str(exc))}") from None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=self._ca_file)
        if self._security == "ssl":
            return smtplib.SMTP_SSL(self._host, self._port, timeout=self._timeout_s, context=context)
        smtp = smtplib.SMTP(self._host, self._port, timeout=self._timeout_s)
        if self._security == "starttls":
            try:
                smtp.starttls(context=context)
            except BaseException:
                smtp.close()
                raise
        return smtp


def channels_from(settings: Settings) -> list[Channel]:
    """The channels the settings configure (Slack when the webhook is set, e-mail when the SMTP host is)."""
    found: list[Channel] = []
    if settings.etl_alert_slack_webhook_url is not None:
        found.append(SlackChannel(settings.etl_alert_slack_webhook_url, settings.etl_alert_timeout_s))
    if settings.etl_alert_smtp_host:
        found.append(EmailChannel(settings))
    return found
