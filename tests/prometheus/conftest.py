"""A real Prometheus server (Debian's `prometheus`), started on a free port with a config naming the targets."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import edgeflow_prometheus.plugin
from edgeflow.plugins import get_plugin_manager
from edgeflow_prometheus.server import release_all

from ..web.support import free_port


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; return its result vector."""
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of `expr`, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def wait_for(self, expr: str, ok: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Wait until `expr` has one value that `ok` accepts; return it."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if last is not None and ok(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"{expr} = {last} after {timeout}s; prometheus log:\n{self.log.read_text()[-2000:]}")


@pytest.fixture(autouse=True)
def _prometheus_plugin(_fresh_plugins: None) -> Iterator[None]:
    pm = get_plugin_manager()
    pm.register(edgeflow_prometheus.plugin, name="prometheus")
    try:
        yield
    finally:
        release_all()


@pytest.fixture
def prometheus() -> Iterator[Callable[[list[str]], Prometheus]]:
    """Start Prometheus scraping `targets` (host:port) every second; stopped at the end of the test."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "no prometheus found: run `make install` (scripts/bootstrap.sh installs it), or "
            "`apt-get install prometheus`"
            " (the server and promtool)",
            pytrace=False,
        )
    started: list[tuple[subprocess.Popen[bytes], tempfile.TemporaryDirectory[str], Any]] = []

    def start(targets: list[str]) -> Prometheus:
        tmp = tempfile.TemporaryDirectory(prefix="prom-")
        root = Path(tmp.name)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "edgeflow", "static_configs": [{"targets": targets}]}],
        }
        (root / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = root / "prometheus.log"
        out = log.open("wb")
        proc = subprocess.Popen(
            [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append((proc, tmp, out))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            assert time.monotonic() < deadline, f"prometheus never got ready: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        return Prometheus(url, proc, log)

    yield start
    for proc, tmp, out in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
        tmp.cleanup()
