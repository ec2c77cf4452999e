"""JVM options for the Pub/Sub emulator: cheaper start-up for a short-lived, lightly loaded server.

Measured by `python -m bench.emulator_start` (docs/performance.md): C1 only (C2's compiles burn CPU
that a test session never earns back), the serial collector (no parallel GC threads on 2 cores),
and a class-data-sharing archive of the emulator's classes, which halves the start-up again. The
launcher (gcloud's platform/pubsub-emulator/bin/cloud-pubsub-emulator) reads them from
CLOUD_PUBSUB_EMULATOR_OPTS (as JAVA_OPTS, without JAVA_TOOL_OPTIONS' banner on stderr); a value the
caller has set wins and gets no archive.

The archive is written by the first emulator's JVM as it exits (-XX:ArchiveClassesAtExit) under a
private name, and only adopted once a JVM has opened it with -Xshare:on: a truncated archive
(an emulator killed while writing it) would abort every later JVM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

OPTS_ENV = "CLOUD_PUBSUB_EMULATOR_OPTS"
PUBSUB_JVM_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
CHECK_TIMEOUT_S = 120.0  # one `java -version`; generous for a loaded machine


@dataclass(frozen=True)
class ClassArchive:
    """Where the emulator's class archive lives, and the jar and java it belongs to."""

    path: Path
    jar: Path
    java: Path

    def pending(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")

    def adopt(self, pending: Path) -> None:
        """Move a freshly written archive into place if a JVM can map it; else throw it away."""
        if not pending.is_file():
            return
        check = [str(self.java), "-Xshare:on", f"-XX:SharedArchiveFile={pending}", "-cp", str(self.jar),
                 "-version"]
        try:
            usable = subprocess.run(check, capture_output=True, timeout=CHECK_TIMEOUT_S).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            usable = False
        if usable:
            os.replace(pending, self.path)  # atomic: concurrent writers each leave a whole archive
        else:
            pending.unlink(missing_ok=True)


def class_archive(launcher: Path) -> ClassArchive | None:
    """The archive for this launcher's one jar and this machine's java, or None if either is unclear."""
    jars = sorted((launcher.parent.parent / "lib").glob("*.jar"))
    java_home = os.environ.get("JAVA_HOME")
    found = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if len(jars) != 1 or not found:
        return None
    java = Path(found).resolve()
    key = hashlib.sha256()
    for path in (jars[0], java):
        stat = path.stat()
        key.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "etl-worker"
    return ClassArchive(cache / f"pubsub-emulator-{key.hexdigest()[:16]}.jsa", jars[0], java)


def jvm_options(launcher: Path | None) -> tuple[str, tuple[ClassArchive, Path] | None]:
    """The options for one emulator start, and the archive to adopt once that emulator has exited
    (None when the archive is already in use, or there is none to make)."""
    if OPTS_ENV in os.environ:
        return os.environ[OPTS_ENV], None
    archive = class_archive(launcher) if launcher else None
    if archive is None:
        return PUBSUB_JVM_OPTS, None
    if archive.path.is_file():
        return f"{PUBSUB_JVM_OPTS} -XX:SharedArchiveFile={archive.path}", None
    with contextlib.suppress(OSError):
        archive.path.parent.mkdir(parents=True, exist_ok=True)
        pending = archive.pending()
        return f"{PUBSUB_JVM_OPTS} -XX:ArchiveClassesAtExit={pending}", (archive, pending)
    return PUBSUB_JVM_OPTS, None
