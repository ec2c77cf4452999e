"""Source passwords: plaintext in the request, or a reference that the worker resolves.

`connection_params` carries at most one of (checked by the message model):

- `password`: plaintext (local use);
- `password_env`: the name of an environment variable of the worker, which must start with
  `ETL_PASSWORD_ENV_PREFIX` (default `ETL_SECRET_`), so a request cannot read any variable;
- `password_file`: a file inside one of `ETL_PASSWORD_FILE_DIRS` (default `/run/secrets`), read as
  UTF-8 with trailing line breaks dropped (mounted Kubernetes / Cloud Run secrets);
- `password_secret`: a Secret Manager secret version `projects/P/secrets/S[/versions/V]` (default
  `latest`), read with the worker's service account (grant it `roles/secretmanager.secretAccessor`
  on the source secrets only).

The allow-lists matter because the request also names the host: a request that could read any file
or variable could send it to a database server of its choosing as a "password".

Every resolved password is registered with the log redactor before it is used. A reference that
cannot be resolved is a permanent ConfigurationError naming the reference, never the value; an
unreachable Secret Manager is transient.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from pydantic import SecretStr

from worker.classify import classify
from worker.errors import ConfigurationError, SourceConnectionError
from worker.logs import REDACTOR
from worker.messages import PASSWORD_FIELDS, ConnectionParams
from worker.settings import Settings

log = logging.getLogger(__name__)
SECRET_TIMEOUT_S = 30.0


class SecretClient(Protocol):
    """The part of `secretmanager.SecretManagerServiceClient` the resolver uses."""

    def access_secret_version(self, *, request: Mapping[str, str], timeout: float) -> Any: ...


def secret_manager_client() -> SecretClient:
    """The real client (imported late: only workers that use `password_secret` pay for it)."""
    from google.cloud import secretmanager

    client: SecretClient = secretmanager.SecretManagerServiceClient()
    return client


@dataclass(frozen=True)
class SecretPolicy:
    """Where references may point."""

    env_prefix: str = "ETL_SECRET_"
    file_dirs: tuple[Path, ...] = (Path("/run/secrets"),)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretPolicy:
        dirs = tuple(Path(d) for d in settings.etl_password_file_dirs.split(os.pathsep) if d)
        return cls(env_prefix=settings.etl_password_env_prefix, file_dirs=dirs)


@dataclass
class SecretResolver:
    """Turns a request's password reference into the password (registered with the redactor)."""

    policy: SecretPolicy = field(default_factory=SecretPolicy)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    client_factory: Callable[[], SecretClient] = secret_manager_client
    _client: SecretClient | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretResolver:
        return cls(policy=SecretPolicy.from_settings(settings))

    def resolved(self, params: ConnectionParams) -> ConnectionParams:
        """`params` with the plaintext `password` filled in and the reference removed."""
        password = self.password(params)
        cleared: dict[str, Any] = {name: None for name in PASSWORD_FIELDS}
        cleared["password"] = None if password is None else SecretStr(password)
        return params.model_copy(update=cleared)

    def password(self, params: ConnectionParams) -> str | None:
        if params.password is not None:
            value: str | None = params.password.get_secret_value()
        elif params.password_env is not None:
            value = self._from_env(params.password_env)
        elif params.password_file is not None:
            value = self._from_file(params.password_file)
        elif params.password_secret is not None:
            value = self._from_secret_manager(params.password_secret)
        else:
            value = None
        REDACTOR.register(value)
        return value

    # --- one function per kind of reference ------------------------------------------------------
    def _from_env(self, name: str) -> str:
        if not name.startswith(self.policy.env_prefix):
            raise ConfigurationError(
                f"password_env {name!r} is not allowed: names must start with {self.policy.env_prefix!r} "
                "(ETL_PASSWORD_ENV_PREFIX)")
        value = self.environ.get(name)
        if not value:
            raise ConfigurationError(f"password_env {name!r}: the worker has no such environment variable")
        return value

    def _from_file(self, name: str) -> str:
        path = self._allowed_file(name)
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, ValueError) as exc:  # missing, unreadable, a directory, not UTF-8
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigurationError(f"password_file {name!r} cannot be read: {reason}") from None

    def _allowed_file(self, name: str) -> Path:
        try:
            path = Path(name).resolve()  # symlinks and '..' resolved before the check
        except (OSError, ValueError, RuntimeError):
            raise ConfigurationError(f"password_file {name!r} is not a valid path") from None
        dirs = [d.resolve() for d in self.policy.file_dirs]
        if not any(path.is_relative_to(d) and path != d for d in dirs):
            allowed = os.pathsep.join(str(d) for d in self.policy.file_dirs) or "(none)"
            raise ConfigurationError(f"password_file {name!r} is not allowed: files must lie in "
                                     f"{allowed} (ETL_PASSWORD_FILE_DIRS)")
        return path

    def _from_secret_manager(self, name: str) -> str:
        version = name if "/versions/" in name else f"{name}/versions/latest"
        try:
            response = self._secret_client().access_secret_version(
                request={"name": version}, timeout=SECRET_TIMEOUT_S)
        except gexc.GoogleAPIError as exc:
            raise _unreadable(name, exc) from None
        try:
            return bytes(response.payload.data).decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigurationError(f"password_secret {name!r} is not UTF-8 text") from None

    def _secret_client(self) -> SecretClient:
        if self._client is None:
            try:
                self._client = self.client_factory()
            except Exception as exc:  # e.g. no credentials on this machine
                raise ConfigurationError(f"no Secret Manager client: {type(exc).__name__}: {exc}") from None
        return self._client


def _unreadable(name: str, exc: gexc.GoogleAPIError) -> ConfigurationError | SourceConnectionError:
    """Secret Manager's refusal, transient or permanent as `classify()` decides for any Google API
    error; the message names the reference and the error's class, never the server's text."""
    if classify(exc).retryable:
        return SourceConnectionError(
            f"Secret Manager unavailable for password_secret {name!r}: {type(exc).__name__}")
    return ConfigurationError(f"password_secret {name!r} cannot be read: {type(exc).__name__}")
