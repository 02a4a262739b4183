"""The ROS 2 side of the tests, run as its own process: `benchmarks._harness.Child("tests.ros2.ros_side:sub", ...)`.

It uses cyclonedds-python's IDL types and (de)serializers only (tests/ros2/ros_msgs.py), never the plugin,
and names topics and types the way rmw_cyclonedds_cpp does: `rt/<topic>`, `pkg::msg::dds_::Name_`.
Each role prints `READY {json}` once its reader or writer exists and `RESULT {json}` when it is done.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from benchmarks._harness import announce

from .patterns import expected_bytes, pattern
from .ros_msgs import TYPES, CompressedImage, Header, Image, String, Time


def _participant() -> DomainParticipant:
    return DomainParticipant(int(os.environ.get("ROS_DOMAIN_ID", "0")))


def _qos(reliable: bool, keep_all: bool = False) -> Qos:
    # rmw_qos_profile_default (reliable, keep last 10) or rmw_qos_profile_sensor_data (best effort, keep last 5);
    # keep_all: a reliable subscription that keeps every message (history KEEP_ALL, bounded).
    if keep_all:
        limits = Policy.ResourceLimits(max_samples=10, max_instances=1, max_samples_per_instance=10)
        return Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepAll, limits)
    if reliable:
        return Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10))
    return Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(5))


def _topic(dp: DomainParticipant, name: str, msg_type: str) -> Topic[Any]:
    return Topic(dp, "rt" + name, TYPES[msg_type])


def _check(msg_type: str, s: Any, now: float, out: dict[str, Any]) -> None:
    """Record one received message; images are compared with the test pattern their frame_id names."""
    out["arrivals"].append(now)
    if msg_type == "std_msgs/msg/String":
        out["texts"].append(s.data)
        return
    stamp = s.header.stamp.sec + s.header.stamp.nanosec * 1e-9
    out["latencies"].append((now - stamp) * 1000.0)
    index = int(s.header.frame_id.removeprefix("f"))
    out["indices"].append(index)
    if msg_type == "sensor_msgs/msg/Image":
        out["fields"].append({"w": s.width, "h": s.height, "encoding": s.encoding, "step": s.step,
                              "bigendian": s.is_bigendian, "len": len(s.data)})  # fmt: skip
        if bytes(s.data) != expected_bytes(index, s.height, s.width, s.encoding):
            out["bad"].append(f"frame {index}: pixels differ")
        return
    import simplejpeg

    img = simplejpeg.decode_jpeg(bytes(s.data), colorspace="BGR")
    err = float(np.abs(img.astype(int) - pattern(index, *img.shape[:2]).astype(int)).mean())
    out["fields"].append({"format": s.format, "h": img.shape[0], "w": img.shape[1]})
    out["max_err"] = max(out["max_err"], err)


def sub(streams: list[dict[str, Any]], timeout: float, reliable: bool = False, keep_all: bool = False,
        delay: float = 0.0, quiet: float | None = None) -> None:  # fmt: skip
    """Read `count` messages of each stream {"topic", "msg_type", "count"} (or until `timeout`), checking them.

    `delay` seconds of work per message make a slow subscriber; `quiet`: also stop once nothing came for that long.
    """
    dp = _participant()
    qos = _qos(reliable, keep_all)
    readers = [(DataReader(dp, _topic(dp, st["topic"], st["msg_type"]), qos=qos), st) for st in streams]
    announce("READY", {})
    seen = {st["topic"]: {"arrivals": [], "latencies": [], "fields": [], "bad": [], "texts": [], "max_err": 0.0,
                         "indices": []} for st in streams}  # fmt: skip
    end = time.monotonic() + timeout
    matched = False
    last = float("inf")
    while time.monotonic() < end and any(len(seen[st["topic"]]["arrivals"]) < st["count"] for st in streams):
        if quiet is not None and time.monotonic() - last > quiet:
            break
        if not matched and all(r.get_subscription_matched_status().current_count for r, _ in readers):
            matched = True
            announce("MATCHED", {})  # every reader knows its writer: what is written from now on arrives
        idle = True
        for reader, st in readers:
            for s in reader.take(N=1 if delay else 16):
                idle = False
                if st["msg_type"] != "std_msgs/msg/String" and s.header.frame_id.startswith("warm-up"):
                    continue
                _check(st["msg_type"], s, time.time(), seen[st["topic"]])
                last = time.monotonic()
                time.sleep(delay)
        if idle:
            time.sleep(0.002)
    result = {}
    for topic, out in seen.items():
        arrivals = out["arrivals"]
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        result[topic] = {
            "count": len(arrivals), "rate": (len(arrivals) - 1) / span if span else 0.0,
            "all_fields": sorted({tuple(sorted(f.items())) for f in out["fields"]}),
            "bad": out["bad"][:5], "n_bad": len(out["bad"]), "texts": out["texts"], "max_err": out["max_err"],
            "indices": out["indices"],
            "p50_ms": float(np.percentile(out["latencies"], 50)) if out["latencies"] else None,
        }  # fmt: skip
    announce("RESULT", result)


def _message(spec: dict[str, Any]) -> Any:
    """Build one message from a spec: the test pattern in an encoding, or explicitly wrong fields."""
    kind = spec["kind"]
    header = Header(Time(spec.get("sec", 0), spec.get("nanosec", 0)), spec.get("frame_id", ""))
    if kind == "string":
        return String(spec["text"])
    if kind == "jpeg":
        import simplejpeg

        blob = simplejpeg.encode_jpeg(pattern(spec["index"], spec["h"], spec["w"]), quality=95, colorspace="BGR")
        return CompressedImage(header, "jpeg", list(blob))
    h, w, encoding = spec["h"], spec["w"], spec["encoding"]
    data = expected_bytes(spec.get("index", 0), h, w, encoding) if encoding in ("bgr8", "rgb8", "mono8") else b""
    data = data[: spec["data_len"]] if "data_len" in spec else data
    step = spec.get("step", len(data) // h if h else 0)
    return Image(header, spec.get("h_field", h), spec.get("w_field", w), encoding, 0, step, list(data))


def pub(streams: list[dict[str, Any]], rate: float, reliable: bool, timeout: float) -> None:
    """Publish each stream's messages at `rate`, interleaved, once its reader matched; wait for acknowledgements.

    A stream is {"topic", "msg_type", "messages"}, and "match": False for a writer that no reader will accept
    (another type on a topic); each stream has a participant of its own, as separate ROS 2 nodes would.
    """
    writers = []
    for stream in streams:
        dp = _participant()
        writer = DataWriter(dp, _topic(dp, stream["topic"], stream["msg_type"]), qos=_qos(reliable))
        # Built before sending: the rate is the wire's, not numpy's.
        writers.append((dp, writer, [_message(m) for m in stream["messages"]], stream.get("match", True)))
    announce("READY", {})
    end = time.monotonic() + timeout
    for _, writer, _, match in writers:
        while match and writer.get_publication_matched_status().current_count < 1 and time.monotonic() < end:
            time.sleep(0.01)
    matched = [w.get_publication_matched_status().current_count for _, w, _, _ in writers]
    next_t = time.perf_counter()
    for i in range(max(len(samples) for _, _, samples, _ in writers)):
        for _, writer, samples, _ in writers:
            if i < len(samples):
                writer.write(samples[i])
        next_t += 1.0 / rate
        time.sleep(max(0.0, next_t - time.perf_counter()))
    acked = all(w.wait_for_acks(duration(seconds=5)) for _, w, _, match in writers if match) if reliable else True
    time.sleep(0.2)
    announce("RESULT", {"sent": sum(len(s) for _, _, s, _ in writers), "matched": matched, "acked": bool(acked)})


def relay(src: str, dst: str, duration_s: float) -> None:
    """Take every Image on `src` and write it unchanged to `dst`, as a ROS 2 node republishing it would."""
    dp = _participant()
    reader = DataReader(dp, _topic(dp, src, "sensor_msgs/msg/Image"), qos=_qos(False))
    writer = DataWriter(dp, _topic(dp, dst, "sensor_msgs/msg/Image"), qos=_qos(False))
    announce("READY", {})
    relayed = 0
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        samples = reader.take(N=16)
        if not samples:
            time.sleep(0.002)
            continue
        for s in samples:
            writer.write(s)
            relayed += 1
    announce("RESULT", {"relayed": relayed})
