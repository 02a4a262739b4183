"""ROS 2 over DDS through edgeflow-ros2: one hop each way, 640x480 frames, beside EdgeFlow's own links.

* `edgeflow ros2 publish`: frames handed to `Ros2Interface.on_frame` (what a gateway does with every frame it
  receives) in one process, read in another by a ROS 2 subscriber's stand-in: a Cyclone DDS reader taking the
  serialized sample and reading the header's stamp, as a C++ node's deserializer would in well under 0.1 ms.
* `edgeflow ros2 receive`: a ROS 2 publisher's stand-in in one process (a Cyclone DDS writer of a
  pre-serialized sensor_msgs/Image whose stamp is set at each send) and `Ros2Source.produce()` in another,
  returning each message as an EdgeFlow frame holding a BGR array.

Latency is `now - header.stamp` on the receiving side (the stamp is the frame's timestamp). DDS runs on
loopback with unicast discovery, on a domain of the run's own. The runner's loop around `produce()` is left
out: these rows are the plugin's hop alone; EdgeFlow's links are measured by `edgeflow_link`.
"""

from __future__ import annotations

import importlib.util
import os
import random
import struct
import threading
import time
from typing import Any

import numpy as np

from .._harness import FRAME_BYTES, Recorder, Settings, announce, report, row, run_pair
from .._pace import SendLoop
from .ceilings import workload_name

_SHAPE = (480, 640, 3)
_END = "end"
_STAMP = struct.Struct("<iI")  # header.stamp right after the 4-byte encapsulation header


def _env() -> dict[str, str]:
    from edgeflow_ros2 import loopback_config

    return {"CYCLONEDDS_URI": loopback_config(), "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 200))}


def _frame_id(sample: bytes) -> str:
    (n,) = struct.unpack_from("<I", sample, 12)
    return sample[16 : 16 + n - 1].decode()


# EdgeFlow -> ROS 2 ------------------------------------------------------------------------------------------
def ros_sub(qos: str, deadline: float) -> None:
    """A ROS 2 subscriber's stand-in: take serialized Images, read the stamp, until the end marker."""
    from edgeflow_ros2 import _dds

    domain = _dds.acquire(int(os.environ["ROS_DOMAIN_ID"]))
    reader = _dds.RawReader(domain, "/bench/image_raw", "sensor_msgs/msg/Image", qos, None)
    announce("READY", {})
    rec = Recorder()
    end = time.monotonic() + deadline
    done = False
    while not done and time.monotonic() < end:
        for sample, info in reader.take(0.2):
            if not info.valid_data:
                continue
            frame_id = _frame_id(sample)
            if frame_id == _END:
                done = True
                break
            if frame_id != "f":
                continue  # the warm-up frames sent until the writer matched
            sec, nanosec = _STAMP.unpack_from(sample, 4)
            rec.hit(sec + nanosec * 1e-9)
    counts = reader.counters()
    reader.close()
    _dds.release(domain)
    announce("RESULT", {**rec.summary(), "dds_lost": counts["lost"], "dds_cache_full": counts["cache_full"]})


def ef_pub(qos: str, rate: float | None, duration: float, max_frames: int) -> None:
    """Hand frames to a Ros2Interface at `rate` (None: as fast as it takes them), once its writer matched."""
    from edgeflow.frame import Frame
    from edgeflow_ros2 import Ros2Interface

    iface = Ros2Interface({"cam": "/bench/image_raw"}, qos=qos)
    iface.start()
    image = np.random.default_rng(0).integers(0, 255, _SHAPE, dtype=np.uint8)
    route = iface.routes["cam"]
    end = time.monotonic() + 20
    while (route.writer is None or route.writer.matched() < 1) and time.monotonic() < end:
        iface.on_frame("cam", Frame(0, time.time(), {"frame_id": "warm-up"}, image))
        time.sleep(0.05)
    before = dict(route.counts)
    loop = SendLoop(rate, duration, max_frames)
    for i in loop:
        if rate is None:
            # Unthrottled: the next frame comes once the writer took the last one, as from a gateway whose
            # intake keeps up. A loop calling on_frame flat out would measure its own hold on the GIL.
            while route.slot is not None:
                time.sleep(0.0001)
        iface.on_frame("cam", Frame(i, time.time(), {"frame_id": "f"}, image))
    time.sleep(0.1)  # the writer takes the last frame
    counts = {k: route.counts[k] - before[k] for k in route.counts}
    for _ in range(3):
        time.sleep(0.05)
        iface.on_frame("cam", Frame(0, time.time(), {"frame_id": _END}, image))
    time.sleep(0.2)
    iface.stop()
    announce("RESULT", {**loop.result(), "dropped": counts["dropped"], "published": counts["published"]})


# ROS 2 -> EdgeFlow ------------------------------------------------------------------------------------------
def ef_sub(qos: str, deadline: float) -> None:
    """Ros2Source.produce() in a loop, recording each frame's timestamp, until the end marker."""
    import logging

    from edgeflow.nodes import IDLE
    from edgeflow.runtime.stats import NodeStats
    from edgeflow_ros2 import Ros2Source

    class Source(Ros2Source):
        pass

    node = Source.__new__(Source)
    params = {"topic": "/bench/image_in", "qos": qos}
    node._bind(name="ros_in", app_name="bench", device=None, replicas=1, replica=0, broker=None,  # type: ignore[arg-type]
               stats=NodeStats("ros_in", "producer"), params=params)  # fmt: skip
    node.logger.setLevel(logging.WARNING)
    node.configure()
    announce("READY", {})
    rec = Recorder()
    shape_ok = True
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        frame = node.produce()
        if frame is IDLE:
            continue
        if frame.meta["frame_id"] == _END:
            break
        shape_ok = shape_ok and frame.data.shape == _SHAPE
        rec.hit(frame.timestamp)
    node.close()  # reads DDS's counters one last time
    extra = node.stats.extra
    announce("RESULT", {**rec.summary(), "shape_ok": shape_ok, "skipped": extra["ros2_skipped"],
                        "dds_lost": extra["ros2_lost"], "dds_cache_full": extra["ros2_cache_full"]})  # fmt: skip


def ros_pub(qos: str, rate: float | None, duration: float, max_frames: int) -> None:
    """A ROS 2 publisher's stand-in: one Image serialized by cyclonedds, its stamp set at each write."""
    from edgeflow_ros2 import _dds, _msgs

    domain = _dds.acquire(int(os.environ["ROS_DOMAIN_ID"]))
    writer = _dds.RawWriter(domain, "/bench/image_in", "sensor_msgs/msg/Image", qos, None)
    pixels = np.random.default_rng(0).integers(0, 255, _SHAPE, dtype=np.uint8)

    def sample(frame_id: str) -> bytearray:
        header = _msgs.Header(_msgs.Time(0, 0), frame_id)
        msg = _msgs.Image(header, 480, 640, "bgr8", 0, 1920, pixels.ravel().tolist())
        return bytearray(msg.serialize())  # once, by cyclonedds' own packer: slow, but not timed

    data, end_marker = sample("f"), sample(_END)
    deadline = time.monotonic() + 20
    while writer.matched() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    loop = SendLoop(rate, duration, max_frames)
    stop = threading.Event()
    timer = threading.Timer(duration + 5, stop.set)  # a reader that stops acknowledging can't hold us forever
    timer.daemon = True
    timer.start()
    timeouts = 0
    for _ in loop:
        now = time.time()
        _STAMP.pack_into(data, 4, int(now), int((now - int(now)) * 1e9))
        timeouts += not writer.write(data, give_up=stop)  # durable: waits for the reader, as ROS 2 would
    for _ in range(3):
        time.sleep(0.05)
        writer.write(end_marker)
    time.sleep(0.2)
    writer.close()
    _dds.release(domain)
    announce("RESULT", {**loop.result(), "timeouts": timeouts})


# The case -----------------------------------------------------------------------------------------------------
def run(quick: bool) -> list[dict[str, Any]]:
    """Both hops at 30/s and unthrottled, realtime (best effort) and durable (reliable)."""
    if importlib.util.find_spec("edgeflow_ros2") is None:
        return [row(workload_name(FRAME_BYTES, None), "edgeflow ros2", "available", 0, "",
                    'edgeflow-ros2 not installed (pip install "edgeflow[ros2]")')]  # fmt: skip
    cfg = Settings.make(quick)
    # A quick run sends 20 frames: paced, so that the newest-wins slot does not keep only the last one.
    plans: list[tuple[float | None, str]] = [(100, "realtime")]
    if not quick:
        plans = [(None, "realtime"), (30, "realtime"), (None, "durable"), (30, "durable")]
    rows: list[dict[str, Any]] = []
    env = _env()
    for rate, qos in plans:
        case = workload_name(FRAME_BYTES, rate)
        duration = cfg.duration_for(rate)
        pub_kw = {"qos": qos, "rate": rate, "duration": duration, "max_frames": cfg.max_frames}
        sub_kw = {"qos": qos, "deadline": duration + 20}
        for direction, sub, pub in (("publish", "ros_sub", "ef_pub"), ("receive", "ef_sub", "ros_pub")):
            system = f"edgeflow ros2 {qos} {direction}"
            try:
                sres, pres = run_pair((f"{__name__}:{sub}", sub_kw), (f"{__name__}:{pub}", pub_kw), duration + 40, env)
            except (RuntimeError, TimeoutError) as exc:
                rows.append(row(case, system, "error", float("nan"), "", str(exc)[-300:]))
                continue
            # Best-effort samples lost on the way are counted by nobody (ROS 2 messages carry no sequence
            # number and Cyclone reports no sample_lost for them): the gap between written and received shows it.
            written = pres["published"] if direction == "publish" else pres["sent"] - pres["timeouts"]
            note = f"received {sres['received']} of {written} written"
            if direction == "publish":
                note += f" ({pres['dropped']} replaced in the interface's slot)"
            else:
                note += f" ({sres['skipped']} skipped by the source, newest wins)"
                if not sres["shape_ok"]:
                    note += ", WRONG SHAPE"
            note += f", refused by the reader's full history {sres['dds_cache_full']}"
            rows += report(case, system, sres, FRAME_BYTES, {"pub": pres["cpu_pct"], "sub": sres["cpu_pct"]}, note)
    return rows
