"""The peers, where installed: eclipse-zenoh and dora-rs, the same two-process pub/sub as the ceilings."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .._harness import Child, Recorder, Settings, announce, report, row, run_pair
from .._pace import TS, SendLoop, payload, stamp
from .ceilings import WORKLOADS, workload_name

_END = b"END"


# zenoh -------------------------------------------------------------------------------------------------
def _zenoh_config(listen: str | None = None, connect: str | None = None) -> Any:
    import zenoh

    # Peers on loopback only: no multicast scouting, one explicit TCP endpoint on 127.0.0.1.
    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("scouting/gossip/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([listen] if listen else []))
    c.insert_json5("connect/endpoints", json.dumps([connect] if connect else []))
    return c


def zenoh_sub(size: int, deadline: float) -> None:
    """Listen on a loopback port and record every sample until END or the deadline."""
    import threading

    import zenoh

    from edgeflow.embedded import free_port

    endpoint = f"tcp/127.0.0.1:{free_port()}"
    session = zenoh.open(_zenoh_config(listen=endpoint))
    rec = Recorder()
    done = threading.Event()

    def on_sample(sample: Any) -> None:
        data = sample.payload.to_bytes()
        if data == _END:
            done.set()
            return
        rec.hit(TS.unpack_from(data, 0)[0])

    sub = session.declare_subscriber("efbench/data", on_sample)
    announce("READY", {"endpoint": endpoint})
    done.wait(deadline)
    sub.undeclare()
    session.close()
    announce("RESULT", rec.summary())


def zenoh_pub(endpoint: str, size: int, rate: float | None, duration: float, max_frames: int) -> None:
    """Connect to the subscriber and put the payload (congestion control BLOCK: nothing dropped silently)."""
    import zenoh

    session = zenoh.open(_zenoh_config(connect=endpoint))
    pub = session.declare_publisher("efbench/data", congestion_control=zenoh.CongestionControl.BLOCK)
    time.sleep(0.5)  # the route to the subscriber is set up asynchronously after connect
    buf = payload(size)
    loop = SendLoop(rate, duration, max_frames)
    for _ in loop:
        stamp(buf)
        pub.put(buf.tobytes())
    for _ in range(3):
        pub.put(_END)
    time.sleep(0.2)
    session.close()
    announce("RESULT", loop.result())


# dora-rs ------------------------------------------------------------------------------------------------
_DORA_PUB = """
import json, sys, time
import pyarrow as pa
from dora import Node
sys.path.insert(0, {root!r})
from benchmarks._pace import SendLoop, payload, stamp
node = Node()
# Send only once the subscriber said it is listening: outputs sent before that would be lost.
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    event = node.next(timeout=0.5)
    if event is not None and event["type"] == "INPUT" and event["id"] == "ready":
        break
buf = payload({size})
loop = SendLoop({rate!r}, {duration!r}, {max_frames!r})
for _ in loop:
    stamp(buf)
    node.send_output("data", pa.array(buf))
node.send_output("end", pa.array([1]))
open({out!r} + ".pub", "w").write(json.dumps(loop.result()))
"""

_DORA_SUB = """
import json, sys
import pyarrow as pa
from dora import Node
sys.path.insert(0, {root!r})
from benchmarks._harness import Recorder
from benchmarks._pace import TS
node = Node()
node.send_output("ready", pa.array([1]))
rec = Recorder()
for event in node:
    if event["type"] == "INPUT":
        if event["id"] == "end":
            break
        rec.hit(TS.unpack_from(event["value"].to_numpy(zero_copy_only=True), 0)[0])
    elif event["type"] == "STOP":
        break
open({out!r} + ".sub", "w").write(json.dumps(rec.summary()))
"""

_DORA_FLOW = """nodes:
  - id: pub
    path: pub.py
    outputs: [data, end]
    inputs:
      ready: sub/ready
  - id: sub
    path: sub.py
    outputs: [ready]
    inputs:
      data: pub/data
      end: pub/end
"""


def dora_run(size: int, rate: float | None, duration: float, max_frames: int) -> None:
    """Write a two-node dataflow, run it with dora's in-process daemon, report what the nodes wrote."""
    import dora

    root = str(Path(__file__).resolve().parents[2])
    with tempfile.TemporaryDirectory(prefix="efbench-dora-") as d:
        out = os.path.join(d, "result")
        kw = {"root": root, "size": size, "rate": rate, "duration": duration, "max_frames": max_frames, "out": out}
        Path(d, "pub.py").write_text(_DORA_PUB.format(**kw))
        Path(d, "sub.py").write_text(_DORA_SUB.format(**kw))
        Path(d, "flow.yml").write_text(_DORA_FLOW)
        os.chdir(d)
        announce("READY", {})
        # dora logs to fd 1 and may close it: keep our own copy of the pipe to the parent for RESULT.
        saved = os.dup(1)
        sys.stdout.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        sys.stdout = os.fdopen(saved, "w")
        dora.run(str(Path(d, "flow.yml")), stop_after=duration + 15)
        try:
            res = {"sub": json.loads(Path(out + ".sub").read_text()), "pub": json.loads(Path(out + ".pub").read_text())}
        except OSError as exc:
            res = {"error": f"the dataflow wrote no result: {exc}"}
    announce("RESULT", res)


# The case -------------------------------------------------------------------------------------------------
def _missing(dist: str, module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{dist} not installed (pip install -r requirements/bench.txt)"
    return None


def _env() -> dict[str, str]:
    # dora spawns its nodes with the `python` on PATH: make it this interpreter.
    return {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def measure_zenoh(size: int, rate: float | None, cfg: Settings) -> list[dict[str, Any]]:
    """One run of zenoh's two-process pub/sub at this workload: its rows (or why it could not run)."""
    case, duration = workload_name(size, rate), cfg.duration_for(rate)
    why = _missing("eclipse-zenoh", "zenoh")
    if why:
        return [row(case, "peer zenoh", "available", 0, "", why)]
    pub_kw = {"size": size, "rate": rate, "duration": duration, "max_frames": cfg.max_frames}
    try:
        sres, pres = run_pair((f"{__name__}:zenoh_sub", {"size": size, "deadline": duration + 15}),
                              (f"{__name__}:zenoh_pub", pub_kw), duration + 30)  # fmt: skip
    except (RuntimeError, TimeoutError) as exc:
        return [row(case, "peer zenoh", "error", float("nan"), "", str(exc)[-300:])]
    cpu = {"pub": pres["cpu_pct"], "sub": sres["cpu_pct"]}
    return report(case, "peer zenoh", sres, size, cpu, f"sent {pres['sent']}")


def measure_dora(size: int, rate: float | None, cfg: Settings) -> list[dict[str, Any]]:
    """One run of a two-node dora-rs dataflow at this workload: its rows (or why it could not run)."""
    case, duration = workload_name(size, rate), cfg.duration_for(rate)
    why = _missing("dora-rs", "dora")
    if why:
        return [row(case, "peer dora-rs", "available", 0, "", why)]
    child = Child(f"{__name__}:dora_run", _env(), size=size, rate=rate, duration=duration, max_frames=cfg.max_frames)
    try:
        child.wait_for("READY", 30)
        res = child.finish(duration + 40)
    except (RuntimeError, TimeoutError) as exc:
        return [row(case, "peer dora-rs", "error", float("nan"), "", str(exc)[-300:])]
    if "error" in res:
        return [row(case, "peer dora-rs", "error", float("nan"), "", res["error"])]
    cpu = {"pub": res["pub"]["cpu_pct"], "sub": res["sub"]["cpu_pct"]}
    return report(case, "peer dora-rs", res["sub"], size, cpu, f"sent {res['pub']['sent']}")


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure zenoh and dora-rs at the ceilings' workloads; say so when one is not installed."""
    cfg = Settings.make(quick)
    rows: list[dict[str, Any]] = []
    for size, rate in WORKLOADS[:1] if quick else WORKLOADS:
        rows += measure_zenoh(size, rate, cfg)
        rows += measure_dora(size, rate, cfg)
    return rows
