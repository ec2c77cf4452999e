"""The Pub/Sub emulator's JVM options (devstack/pubsub_jvm.py): the class archive is made by the first
emulator's exit, used by the next one, and a damaged archive is never adopted."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.emulators import pubsub_launcher, start_pubsub
from devstack.pubsub_jvm import OPTS_ENV, PUBSUB_JVM_OPTS, class_archive, jvm_options

LAUNCHER = pubsub_launcher()
needs_launcher = pytest.mark.skipif(LAUNCHER is None, reason="gcloud's Pub/Sub emulator launcher is absent")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(OPTS_ENV, raising=False)
    return tmp_path / "etl-worker"


@needs_launcher
@pytest.mark.services
def test_the_first_emulator_writes_the_archive_and_the_next_uses_it(cache: Path, tmp_path: Path) -> None:
    assert LAUNCHER is not None
    archive = class_archive(LAUNCHER)
    assert archive is not None and archive.path.parent == cache
    # Given no archive yet: the emulator starts with the cheap options and writes one as it exits
    opts, pending = jvm_options(LAUNCHER)
    assert opts.startswith(PUBSUB_JVM_OPTS) and "ArchiveClassesAtExit" in opts and pending
    start_pubsub("etl-test", tmp_path).stop()
    assert archive.path.is_file() and list(cache.glob("*.tmp")) == []
    # Then the next emulator maps it, and starts and serves as before
    opts, pending = jvm_options(LAUNCHER)
    assert opts == f"{PUBSUB_JVM_OPTS} -XX:SharedArchiveFile={archive.path}" and pending is None
    emulator = start_pubsub("etl-test", tmp_path)
    try:
        assert emulator.process.poll() is None and "Server started" in emulator.log_path.read_text()
    finally:
        emulator.stop()


@needs_launcher
def test_a_truncated_archive_is_thrown_away(cache: Path) -> None:
    # Given a pending archive cut short (its JVM killed while writing it)
    assert LAUNCHER is not None
    archive = class_archive(LAUNCHER)
    assert archive is not None
    cache.mkdir(parents=True)
    pending = archive.pending()
    pending.write_bytes(b"\x00" * 4096)
    # When it is offered for adoption, then it is deleted and no archive is in place
    archive.adopt(pending)
    assert not pending.exists() and not archive.path.exists()
    assert "ArchiveClassesAtExit" in jvm_options(LAUNCHER)[0]


def test_options_set_by_the_caller_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPTS_ENV, "-Xmx64m")
    assert jvm_options(LAUNCHER) == ("-Xmx64m", None)
