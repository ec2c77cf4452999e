"""Before a command talks to Google: is each service it needs reachable with what is configured?

A newcomer without credentials, or with an emulator variable pointing at nothing, gets one line
saying what to set instead of a traceback or minutes of retries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import google.auth
from google.auth.exceptions import DefaultCredentialsError

from worker.settings import Settings

Service = Literal["pubsub", "bigquery"]
CONNECT_TIMEOUT_S = 2.0
_NAMES = {"pubsub": "Pub/Sub", "bigquery": "BigQuery"}
_VARIABLES = {"pubsub": "PUBSUB_EMULATOR_HOST", "bigquery": "BIGQUERY_EMULATOR_HOST"}
NO_CREDENTIALS_HINT = (
    "no Google credentials found for {services}: run `gcloud auth application-default login` or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service account key file (on Cloud Run and GKE the service "
    "account is used); for the local emulators set {variables} instead"
)


@dataclass(frozen=True)
class PreflightError(Exception):
    """What is missing, as one line for the terminal."""

    message: str

    def __str__(self) -> str:
        return self.message


def check(settings: Settings, services: Iterable[Service]) -> None:
    """Raise PreflightError when a needed emulator does not answer or no credentials exist."""
    needed = tuple(services)
    real = [service for service in needed if not _emulator_host(settings, service)]
    for service in needed:
        host = _emulator_host(settings, service)
        if host:
            _check_reachable(service, host)
    if real:
        _check_credentials(real)


def _emulator_host(settings: Settings, service: Service) -> str | None:
    return settings.pubsub_emulator_host if service == "pubsub" else settings.bigquery_emulator_host


def _check_reachable(service: Service, host_port: str) -> None:
    address = host_port.removeprefix("http://").removeprefix("https://").rstrip("/")
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PreflightError(
            f"the {_NAMES[service]} emulator at {host_port} ({_VARIABLES[service]}) is not reachable "
            f"({reason}): start it (`make demo` starts both emulators) or unset {_VARIABLES[service]} "
            f"to use {_NAMES[service]} itself"
        ) from None


def _check_credentials(services: list[Service]) -> None:
    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise PreflightError(no_credentials(services)) from None


def no_credentials(services: Iterable[Service]) -> str:
    chosen = tuple(services)
    return NO_CREDENTIALS_HINT.format(services=" and ".join(_NAMES[s] for s in chosen),
                                      variables=" and ".join(_VARIABLES[s] for s in chosen))
