"""Password references: env, file, Secret Manager (a fake client: no emulator exists), plaintext."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from worker.classify import classify
from worker.errors import ConfigurationError, MessageDecodeError, SourceConnectionError
from worker.logs import REDACTOR, redact
from worker.messages import ConnectionParams, decode_request
from worker.secrets import SecretPolicy, SecretResolver


@dataclass
class Payload:
    data: bytes


@dataclass
class Response:
    payload: Payload


class FakeSecretManager:
    """Answers access_secret_version like the real client (names → payload bytes, or an error)."""

    def __init__(self, secrets: Mapping[str, bytes | Exception]) -> None:
        self.secrets = secrets
        self.requests: list[str] = []

    def access_secret_version(self, *, request: Mapping[str, str], timeout: float) -> Any:
        name = request["name"]
        self.requests.append(name)
        value = self.secrets.get(name, gexc.NotFound(f"Secret [{name}] not found"))
        if isinstance(value, Exception):
            raise value
        return Response(Payload(value))


def resolver(tmp_path: Path, environ: Mapping[str, str] | None = None,
             client: FakeSecretManager | None = None) -> SecretResolver:
    fake = client or FakeSecretManager({})
    return SecretResolver(SecretPolicy(env_prefix="ETL_SECRET_", file_dirs=(tmp_path,)),
                          environ=environ or {}, client_factory=lambda: fake)


def params(**password: str) -> ConnectionParams:
    # Validated as a publisher's request is: the password fields arrive as strings.
    return ConnectionParams.model_validate(
        {"host": "127.0.0.1", "port": 5432, "database": "db", "username": "u", **password})


def test_plaintext_password_is_used_as_is(tmp_path: Path) -> None:
    assert resolver(tmp_path).password(params(password="plain-pw-1")) == "plain-pw-1"
    assert resolver(tmp_path).password(params()) is None


def test_env_reference_is_resolved_and_redacted(tmp_path: Path) -> None:
    resolved = resolver(tmp_path, {"ETL_SECRET_SHOP": "env-pw-4711"}).resolved(
        params(password_env="ETL_SECRET_SHOP"))
    assert resolved.password is not None and resolved.password.get_secret_value() == "env-pw-4711"
    assert resolved.password_env is None
    assert redact("login with env-pw-4711 failed") == "login with *** failed"


def test_missing_env_variable_is_permanent_and_names_the_reference(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ETL_SECRET_MISSING") as caught:
        resolver(tmp_path).password(params(password_env="ETL_SECRET_MISSING"))
    assert not caught.value.retryable


def test_env_reference_outside_the_prefix_is_refused_without_reading_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ETL_PASSWORD_ENV_PREFIX") as caught:
        resolver(tmp_path, {"HOME": "/root-secret"}).password(params(password_env="HOME"))
    assert "/root-secret" not in str(caught.value)


def test_file_reference_drops_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "shop").write_text("file-pw-123\n")
    assert resolver(tmp_path).password(params(password_file=str(tmp_path / "shop"))) == "file-pw-123"
    assert "file-pw-123" not in redact("password file-pw-123")


def test_missing_file_is_permanent_and_names_the_reference(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigurationError, match="nope") as caught:
        resolver(tmp_path).password(params(password_file=missing))
    assert not caught.value.retryable


@pytest.mark.parametrize("path", ["/etc/passwd", "{dir}/../outside", "{dir}", "{dir}/link"])
def test_files_outside_the_allowed_directories_are_refused(tmp_path: Path, path: str) -> None:
    allowed = tmp_path / "secrets"
    allowed.mkdir()
    (tmp_path / "outside").write_text("not-for-you")
    (allowed / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigurationError, match="not allowed") as caught:
        resolver(allowed).password(params(password_file=path.format(dir=allowed)))
    assert "not-for-you" not in str(caught.value)


def test_secret_manager_reference_reads_latest_version_by_default(tmp_path: Path) -> None:
    name = "projects/p1/secrets/shop-db"
    fake = FakeSecretManager({f"{name}/versions/latest": b"sm-pw-777", f"{name}/versions/3": b"sm-pw-3"})
    assert resolver(tmp_path, client=fake).password(params(password_secret=name)) == "sm-pw-777"
    assert resolver(tmp_path, client=fake).password(params(password_secret=f"{name}/versions/3")) == "sm-pw-3"
    assert fake.requests == [f"{name}/versions/latest", f"{name}/versions/3"]
    assert redact("sm-pw-777") == "***"


@pytest.mark.parametrize(("error", "kind"), [
    (gexc.NotFound("no such secret"), ConfigurationError),
    (gexc.PermissionDenied("denied"), ConfigurationError),
    (gexc.ServiceUnavailable("down"), SourceConnectionError),
    (gexc.DeadlineExceeded("slow"), SourceConnectionError),
])
def test_secret_manager_errors_are_classified(tmp_path: Path, error: Exception, kind: type) -> None:
    name = "projects/p1/secrets/s"
    fake = FakeSecretManager({f"{name}/versions/latest": error})
    with pytest.raises(kind, match="projects/p1/secrets/s"):
        resolver(tmp_path, client=fake).password(params(password_secret=name))


@pytest.mark.parametrize("error", [
    gexc.NotFound("x"), gexc.PermissionDenied("x"), gexc.Unauthenticated("x"), gexc.InvalidArgument("x"),
    gexc.FailedPrecondition("x"), gexc.OutOfRange("x"), gexc.ServiceUnavailable("x"),
    gexc.DeadlineExceeded("x"), gexc.ResourceExhausted("x"), gexc.Aborted("x"), gexc.InternalServerError("x"),
    gexc.Unknown("x"), gexc.TooManyRequests("x"),
], ids=lambda error: type(error).__name__)
def test_secret_manager_errors_take_the_one_classifiers_verdict(tmp_path: Path, error: Exception) -> None:
    # transient as classify() decides for any Google API error; the server's text is not repeated
    name = "projects/p1/secrets/s"
    fake = FakeSecretManager({f"{name}/versions/latest": error})
    kind = SourceConnectionError if classify(error).retryable else ConfigurationError
    with pytest.raises(kind, match=type(error).__name__) as caught:
        resolver(tmp_path, client=fake).password(params(password_secret=name))
    assert type(caught.value) is kind and caught.value.retryable is classify(error).retryable


def test_secret_manager_without_credentials_is_a_configuration_error(tmp_path: Path) -> None:
    def no_client() -> Any:
        raise RuntimeError("Your default credentials were not found")

    broken = SecretResolver(SecretPolicy(file_dirs=(tmp_path,)), environ={}, client_factory=no_client)
    with pytest.raises(ConfigurationError, match="no Secret Manager client"):
        broken.password(params(password_secret="projects/p/secrets/s"))


@pytest.mark.parametrize("connection", [
    {"password": "a", "password_env": "ETL_SECRET_A"},
    {"password_file": "/run/secrets/a", "password_secret": "projects/p/secrets/a"},
    {"password_env": "not a name"},
    {"password_secret": "secrets/a"},
])
def test_request_gives_at_most_one_well_formed_reference(connection: dict[str, str]) -> None:
    body = {"data_source_id": 1, "source_type": "postgresql", "source_table_name": "t",
            "dest_table_name": "t", "load_type": "catalog",
            "connection_params": {"host": "127.0.0.1", "database": "d", **connection}}
    with pytest.raises(MessageDecodeError, match="connection_params"):
        decode_request(json.dumps(body).encode())


def test_url_encoded_form_of_a_secret_is_redacted_too() -> None:
    REDACTOR.register("p@ss/wörd:1")
    assert redact("sent p%40ss%2Fw%C3%B6rd%3A1 and p%40ss%2Fw%C3%B6rd%3A1") == "sent *** and ***"
