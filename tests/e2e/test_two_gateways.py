"""An app with two gateways runs as one process and as one process per node: each gateway gets its own TCP port,
derived when nothing sets it, from GATEWAY_<NAME>_TCP_PORT when something does."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from edgeflow.embedded import free_port
from edgeflow.testing import wait_for

from .conftest import APPS, Proc, read_records

APP = str(APPS / "two_gateways.py")


def _two_free_ports() -> int:
    """A free port whose successor is free too (the second gateway's derived port)."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", base + 1))
                return base
            except OSError:
                continue
    raise AssertionError("no two consecutive free ports")


def _received(env: dict[str, str]) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in read_records(env)}


def _both_gateways_get_their_topics(env: dict[str, str], procs: list[Proc]) -> None:
    want = {("north", "camera"), ("south-1", "camera"), ("south-1", "lidar")}
    assert wait_for(lambda: _received(env) >= want, timeout=30), (_received(env), procs[0].output()[-3000:])
    assert ("north", "lidar") not in _received(env), "lidar is linked into south-1 only"


def test_two_gateways_in_one_process_get_derived_ports(env: dict[str, str], procs: list[Proc], tmp_path: Path) -> None:
    base = _two_free_ports()
    env["GATEWAY_TCP_PORT"] = str(base)
    run = Proc([APP], env, tmp_path / "app.log")
    procs.append(run)
    _both_gateways_get_their_topics(env, procs)
    out = run.output()
    assert f"receives frames on tcp 0.0.0.0:{base} (GATEWAY_TCP_PORT {base} + 0" in out, out
    assert f"receives frames on tcp 0.0.0.0:{base + 1} (GATEWAY_TCP_PORT {base} + 1" in out, out
    assert "GATEWAY_SOUTH_1_TCP_PORT sets it" in out


@pytest.mark.parametrize("how", ["derived", "per-gateway env"])
def test_two_gateways_as_processes_per_node(env: dict[str, str], procs: list[Proc], tmp_path: Path, how: str) -> None:
    if how == "derived":
        env["GATEWAY_TCP_PORT"] = str(_two_free_ports())
    else:
        env.update(GATEWAY_NORTH_TCP_PORT=str(free_port()), GATEWAY_SOUTH_1_TCP_PORT=str(free_port()),
                   GATEWAY_NORTH_HOST="127.0.0.1", GATEWAY_SOUTH_1_HOST="localhost")  # fmt: skip
    for node in ("north", "south-1"):
        procs.append(Proc([APP, "--node", node], env, tmp_path / f"{node}.log"))
    time.sleep(1.0)
    for node in ("camera", "lidar"):
        procs.append(Proc([APP, "--node", node], env, tmp_path / f"{node}.log"))
    _both_gateways_get_their_topics(env, procs)
    for p in procs:
        assert "can't send to the gateway" not in p.output(), p.output()[-2000:]
