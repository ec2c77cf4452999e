"""A newcomer's first commands: one clear line, exit 2, when credentials or an emulator are missing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker.cli import main


@pytest.fixture
def no_google(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An environment with no credentials anywhere and no emulators."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # no metadata server either
    monkeypatch.setenv("GCP_PROJECT_ID", "p")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.mark.parametrize(("argv", "services"), [
    (["serve"], "Pub/Sub and BigQuery"),
    (["setup"], "Pub/Sub"),
    (["runs"], "BigQuery"),
])
def test_no_credentials_is_one_line_naming_what_to_set(
    no_google: None, capsys: pytest.CaptureFixture[str], argv: list[str], services: str
) -> None:
    assert main(["--no-json-logs", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"etl-worker: no Google credentials found for {services}: ")
    assert "gcloud auth application-default login" in err and "GOOGLE_APPLICATION_CREDENTIALS" in err


def test_an_unreachable_emulator_is_one_line_naming_the_variable(
    no_google: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = closed_port()
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"127.0.0.1:{port}")
    request = tmp_path / "request.json"
    request.write_text("{}")
    assert main(["--no-json-logs", "run", "--request", str(request)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"etl-worker: the BigQuery emulator at 127.0.0.1:{port} (BIGQUERY_EMULATOR_HOST) is not reachable "
        "(Connection refused): start it (`make demo` starts both emulators) or unset "
        "BIGQUERY_EMULATOR_HOST to use BigQuery itself\n")


def test_an_emulator_covers_its_service_so_no_credentials_are_needed(
    no_google: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Pub/Sub emulator variable pointing at a port that listens
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{listener.getsockname()[1]}")
        # When `serve` needs Pub/Sub (emulated) and BigQuery (real, no credentials)
        assert main(["--no-json-logs", "serve"]) == 2
    # Then only BigQuery's credentials are asked for
    assert "no Google credentials found for BigQuery: " in capsys.readouterr().err
