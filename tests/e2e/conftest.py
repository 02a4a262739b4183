"""Helpers for tests that run apps as real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeflow.embedded import free_port

from ..helpers import user_env

APPS = Path(__file__).parent / "apps"
FIGURES = Path(__file__).parents[2] / "artifacts" / "reliability.json"


class Proc:
    """A child process whose output goes to a file; stopped with a signal."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.p = subprocess.Popen([sys.executable, *args], env=env, stdout=self._fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, within: float = 5.0) -> tuple[int, float]:
        """Send `sig`; return the exit code and the seconds it took to exit."""
        t0 = time.monotonic()
        self.p.send_signal(sig)
        try:
            code = self.p.wait(timeout=within + 5)
        finally:
            self._fh.close()
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self._fh.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test; any still running at its end are killed."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def env(tmp_path: Path, redis_url: str, app_name: str) -> dict[str, str]:
    """Environment for an app process: the test Redis, its own app name, a free gateway port, a record file."""
    e = user_env()
    e.update(REDIS_URL=redis_url, APP_NAME=app_name, GATEWAY_TCP_PORT=str(free_port()),
             RECORD=str(tmp_path / "record.txt"))  # fmt: skip
    for var in ("FRAMES", "FPS", "WORK_SECONDS", "CLAIM_AFTER"):
        e.pop(var, None)
    return e


def read_records(env: dict[str, str]) -> list[list[str]]:
    """The lines an app wrote to $RECORD, split on spaces."""
    path = Path(env["RECORD"])
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def report(case: str, **figures: Any) -> None:
    """Keep a fault-injection case's figures for docs/reliability.md and the end-of-run summary."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    data[case] = figures
    FIGURES.write_text(json.dumps(data, indent=2, sort_keys=True))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.exists():
        return
    data = json.loads(FIGURES.read_text())
    terminalreporter.section("fault injection figures")
    for case, figures in sorted(data.items()):
        terminalreporter.write_line(f"{case}: " + ", ".join(f"{k}={v}" for k, v in sorted(figures.items())))
