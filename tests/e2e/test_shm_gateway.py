"""A gateway on the producer's host takes its frames from shared memory (edgeflow-shm's gateway channel); a gateway
on another host, and one that goes away, get them over TCP. Two real processes per case, a real Redis."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from edgeflow.testing import wait_for
from edgeflow_shm._channel import futex_available

from .conftest import APPS, Proc, read_records

APP = str(APPS / "shm_gateway.py")

pytestmark = pytest.mark.skipif(not futex_available(), reason="the channel needs Linux futexes")


def _ways(env: dict[str, str], since: int = 0) -> list[str]:
    return [r[1] for r in read_records(env)[since:]]


def test_a_gateway_on_the_producers_host_reads_shared_memory_and_one_elsewhere_tcp(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    gateway = Proc([APP, "--node", "gateway"], env, tmp_path / "gateway.log")
    procs.append(gateway)
    camera = Proc([APP, "--node", "camera"], env, tmp_path / "camera.log")
    procs.append(camera)
    assert wait_for(lambda: _ways(env)[-50:].count("shm") == 50, timeout=30), (
        _ways(env)[-60:], camera.output()[-2000:], gateway.output()[-2000:])  # fmt: skip
    assert "gateway 'gateway' reads on this host: frames go to it through channel" in camera.output()
    records = read_records(env)
    assert all(ok == "1" for _, _, ok in records), "no frame the gateway keeps is overwritten under it"
    ids = [int(r[0]) for r in records]
    assert ids == sorted(set(ids)), "in order and none twice, across the switch from TCP"

    # The gateway goes; one on "another host" (another shared-memory host id) takes its place: TCP again.
    code, _ = gateway.stop(signal.SIGTERM)
    assert code == 0, gateway.output()[-2000:]
    since = len(read_records(env))
    elsewhere = Proc([APP, "--node", "gateway"], {**env, "EDGEFLOW_SHM_HOST_ID": "another-host"},
                     tmp_path / "elsewhere.log")  # fmt: skip
    procs.append(elsewhere)
    assert wait_for(lambda: _ways(env, since)[-50:].count("copy") == 50, timeout=30), (
        _ways(env, since)[-60:], camera.output()[-2000:])  # fmt: skip
    assert "no longer reads on this host" in camera.output()
    assert "shm" not in _ways(env, since + 10), "a gateway elsewhere gets nothing through this host's memory"
