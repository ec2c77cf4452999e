"""Headless Chromium (Debian's `chromium`) against a page on 127.0.0.1: its DOM after the scripts
ran, and a screenshot. The flags keep it off the network (this machine has none)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--force-device-scale-factor=1")
TIMEOUT_S = 120


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: scripts/system-deps.sh installs it (make install)")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def dump_dom(url: str, budget_ms: int = 6000) -> str:
    result = _chromium(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path, size: tuple[int, int] = (1400, 1500), budget_ms: int = 6000) -> Path:
    result = _chromium(f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
                       f"--screenshot={path}", url)
    assert result.returncode == 0 and path.exists() and path.stat().st_size > 10_000, result.stderr[-2000:]
    return path
