"""Scaling a durable consumer from 4 replicas to 1 under load, as KEDA or `kubectl scale` does (SIGTERM to the
pods that go): each replica that stops hands its unacknowledged frames over, and nothing is lost.

claim_after is 30 s here: were the frames of the stopped replicas only taken over as a dead replica's are, the
last of them would come 30 s after the scale-down; handed over, they come within seconds.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from edgeflow.testing import wait_for

from .conftest import APPS, Proc, read_records, report

APP = str(APPS / "scaled.py")

pytestmark = pytest.mark.slow


def stored(env: dict[str, str]) -> list[int]:
    return [int(r[1]) for r in read_records(env) if r[0] == "store"]


def test_scaling_a_durable_consumer_from_4_to_1_under_load_loses_nothing(
    env: dict[str, str], procs: list[Proc], tmp_path: Path
) -> None:
    frames = 600
    # The producer outpaces the four replicas (4 x 50 frames/s): each reads batches and holds what waits.
    env.update(FRAMES=str(frames), FPS="400", WORK_SECONDS="0.02", CLAIM_AFTER="30")
    store = Proc([APP, "--node", "store"], env, tmp_path / "store.log")
    workers = [Proc([APP, "--node", "work", "--replicas", "1"], env, tmp_path / f"work{i}.log") for i in range(4)]
    procs.extend([store, *workers])
    time.sleep(1.5)
    producer = Proc([APP, "--node", "numbers"], env, tmp_path / "numbers.log")
    procs.append(producer)
    assert wait_for(lambda: len(stored(env)) >= 150, timeout=30), workers[0].output()
    by = {r[2] for r in read_records(env)}
    assert len(by) == 4, f"all four replicas took work: {by}"
    stopped_at = time.time()
    for w in workers[1:]:
        code, took = w.stop(signal.SIGTERM)
        assert code == 0 and took < 5.0
    handed = sum(int(line.split("handed ")[1].split()[0]) for w in workers[1:] for line in w.output().splitlines()
                 if "unacknowledged durable frame(s)" in line)  # fmt: skip
    assert producer.p.wait(timeout=30) == 0
    assert wait_for(lambda: set(stored(env)) >= set(range(1, frames + 1)), timeout=25), workers[0].output()[-3000:]
    got = stored(env)
    done_at = max(float(r[3]) for r in read_records(env))
    lost = len(set(range(1, frames + 1)) - set(got))
    report("scale a durable consumer 4 -> 1 under load", sent=frames, received=len(got), lost=lost,
           duplicated=len(got) - len(set(got)), handed_over=handed,
           drained_s=round(done_at - stopped_at, 2))  # fmt: skip
    assert lost == 0
    assert handed > 0, "the replicas that stopped held frames and handed them over"
    assert done_at - stopped_at < 25, "handed over, not waiting out claim_after=30s"
