"""Sinks: frames/s and MB/s that SQLiteSink, FileSink and McapSink keep up with, against the disk's own ceiling.

Three kinds of rows, all written into one folder on the same disk:
* `ceiling dd`: the disk's sequential write speed, `dd ... conv=fdatasync` (what any sink can at best reach);
* `<sink> alone`: the sink's own write + commit path in this process, frames handed to it as fast as it takes
  them (921,600-byte frames of noise, which zstd can't shrink: the worst case; and 100-byte messages);
* `<sink> via durable link`: a producer process at a fixed rate into the sink in another process over a durable
  link (McapSink at 200 MB/s of frames, SQLiteSink at 30 fps), with the frames sent and stored: none may drop.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .._harness import FRAME_BYTES, MSG_BYTES, Settings, row, run_pair

_NODE = "benchmarks._sinkapp:node_proc"


def sinks() -> dict[str, tuple[str, str]]:
    """The sinks measured: name -> (class path, output name)."""
    found = {"sqlite": ("edgeflow.sinks:SQLiteSink", "run.db"), "file": ("edgeflow.sinks:FileSink", "run")}
    if importlib.util.find_spec("edgeflow_mcap"):
        found["mcap"] = ("edgeflow_mcap:McapSink", "run.mcap")
    return found


def disk_ceiling(folder: Path, mb: int) -> float:
    """MB/s of `dd` writing `mb` MiB with one fdatasync at the end, in `folder`."""
    target = folder / "dd.bin"
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mb}", "conv=fdatasync"],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    took = time.perf_counter() - t0
    target.unlink()
    return mb * (1 << 20) / took / 1e6


def _payload(size: int) -> Any:
    if size == FRAME_BYTES:
        return np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return b"x" * size


def alone(cls_path: str, out: Path, size: int, seconds: float, max_frames: int) -> dict[str, float]:
    """Hand one sink frames for `seconds` in this process; return frames/s and MB/s including the commits."""
    from edgeflow import Frame
    from edgeflow.runtime.stats import NodeStats

    from .._sinkapp import load

    cls = load(cls_path)
    sink = cls()
    sink._bind(name="bench", app_name="bench", device=None, replicas=1, replica=0, broker=None,  # type: ignore[arg-type]
               stats=NodeStats("bench", "sink"), params={"path": str(out)})  # fmt: skip
    sink.configure()
    data = _payload(size)
    sink.current_source = "src"
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while n < max_frames and time.perf_counter() < end:
        n += 1
        sink.current_frame = Frame(n, time.time(), {}, data)
        sink.process(data)
        if sink.flush_due():
            sink.flush()
    sink.flush()
    took = time.perf_counter() - t0
    sink.close()
    return {"rate": n / took, "mb_per_s": n * size / took / 1e6, "frames": n}


def run(quick: bool) -> list[dict[str, Any]]:
    """Measure the ceiling, each sink alone, and each sink behind a durable link at its target rate."""
    from edgeflow.embedded import EmbeddedRedis

    Settings.make(quick)  # children inherit the mode
    rows: list[dict[str, Any]] = []
    base = Path(os.environ.get("EFBENCH_SINK_DIR") or tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix="efbench-sinks-", dir=base))
    try:
        ceiling = disk_ceiling(folder, 16 if quick else 512)
        rows.append(row("sink 921600B", "ceiling dd", "mb_per_s", ceiling, "MB/s", f"dd conv=fdatasync in {base}"))
        seconds = 0.3 if quick else 4.0
        for name, (cls_path, output) in sinks().items():
            for size in (FRAME_BYTES, MSG_BYTES):
                out = folder / f"{name}-{size}-{output}"
                try:
                    got = alone(cls_path, out, size, seconds, 20 if quick else 2_000_000)
                except Exception as exc:
                    rows.append(row(f"sink {size}B", f"{name} alone", "error", float("nan"), "", str(exc)[:300]))
                    continue
                note = f"{got['frames']:.0f} frames" + (f", {got['mb_per_s'] / ceiling:.2f}x dd" if size > 1000 else "")
                rows.append(row(f"sink {size}B", f"{name} alone", "rate", got["rate"], "msg/s", note))
                rows.append(row(f"sink {size}B", f"{name} alone", "mb_per_s", got["mb_per_s"], "MB/s", note))
                _clean(out)
        server = EmbeddedRedis().start()
        try:
            # The targets: McapSink at 200 MB/s of raw frames (217/s), SQLiteSink at 30 fps; FileSink at 30 fps.
            targets = {"mcap": 200e6 / FRAME_BYTES, "sqlite": 30.0, "file": 30.0}
            for name, (cls_path, output) in sinks().items():
                rate = targets[name]
                duration = 0.5 if quick else 5.0
                kw: dict[str, Any] = {
                    "url": server.url, "app_name": f"bench-{uuid.uuid4().hex[:8]}", "sink": cls_path,
                    "out": str(folder / f"link-{output}"), "rate": rate, "duration": duration,
                    "max_frames": 20 if quick else 1_000_000, "deadline": duration + 60,
                }  # fmt: skip
                case = f"sink 921600B {rate:.0f}/s durable"
                try:
                    sres, pres = run_pair((_NODE, {**kw, "nodes": ["dst"]}), (_NODE, {**kw, "nodes": ["src"]}),
                                          duration + 90)  # fmt: skip
                except (RuntimeError, TimeoutError) as exc:
                    rows.append(row(case, f"{name} via durable link", "error", float("nan"), "", str(exc)[-300:]))
                    continue
                sent, stored = pres["sent"], sres["stored"]
                note = f"sent {sent} stored {stored} dropped {sent - stored}"
                rows.append(row(case, f"{name} via durable link", "rate", sres["rate"], "msg/s", note))
                rows.append(row(case, f"{name} via durable link", "mb_per_s", sres["rate"] * FRAME_BYTES / 1e6,
                                "MB/s", note))  # fmt: skip
                rows.append(row(case, f"{name} via durable link", "dropped", sent - stored, "frames", note))
                _clean(folder / f"link-{output}")
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _clean(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for p in path.parent.glob("." + path.name + "*"):
        p.unlink(missing_ok=True)
