"""What every case shares: result rows, latency statistics, CPU clocks and the child-process protocol.

Children are plain `python -m benchmarks._child module:function '{json kwargs}'` processes (a fresh
interpreter, like multiprocessing's spawn, but with JSON instead of pickle on the pipe). A child prints
`READY {json}` once it can be sent to, and `RESULT {json}` when it is done.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "FRAME_BYTES",
    "MSG_BYTES",
    "Child",
    "CpuClock",
    "Recorder",
    "ServerCpu",
    "Settings",
    "announce",
    "percentile",
    "report",
    "row",
    "run_pair",
]

FRAME_BYTES = 640 * 480 * 3
MSG_BYTES = 100
ROOT = Path(__file__).resolve().parent.parent
# Latency samples kept per run: enough for a stable p99, bounded whatever the rate.
_MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class Settings:
    """How long each run lasts: a few frames in --quick (the smoke test), seconds otherwise."""

    quick: bool
    duration: float = 3.0
    max_frames: int = 2_000_000

    @classmethod
    def make(cls, quick: bool) -> Settings:
        """Return the settings for a quick or a full run (children inherit the mode through the environment)."""
        os.environ["EFBENCH_QUICK"] = "1" if quick else "0"
        return cls(True, 0.3, 20) if quick else cls(False, 3.0, 2_000_000)

    def duration_for(self, rate: float | None) -> float:
        """Paced runs last longer so that a 30/s p99 rests on enough samples."""
        if self.quick:
            return self.duration
        return 5.0 if rate is not None and rate <= 30 else self.duration


def row(case: str, broker: str, metric: str, value: float, unit: str, note: str = "") -> dict[str, Any]:
    """Return one result in the shape every case module returns."""
    return {"case": case, "broker": broker, "metric": metric, "value": float(value), "unit": unit, "note": note}


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of `values` by nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


class CpuClock:
    """CPU % of this process (all its threads) between `start()` and `stop()`."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._cpu0 = 0.0
        self._t0 = 0.0
        self.pct = float("nan")

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def start(self) -> None:
        """Start the window."""
        self._cpu0, self._t0 = self._cpu(), time.perf_counter()

    def stop(self) -> float:
        """End the window; return and keep the CPU %."""
        wall = time.perf_counter() - self._t0
        self.pct = 100.0 * (self._cpu() - self._cpu0) / wall if wall > 0 else float("nan")
        return self.pct


class ServerCpu:
    """CPU % of another process (the redis-server) from construction to `stop()`."""

    def __init__(self, pid: int | None) -> None:
        self._proc = psutil.Process(pid) if pid else None
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu()

    def _cpu(self) -> float:
        if self._proc is None:
            return 0.0
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> float:
        """Return the CPU % since construction (NaN when there is no process)."""
        if self._proc is None:
            return float("nan")
        wall = time.perf_counter() - self._t0
        return 100.0 * (self._cpu() - self._cpu0) / wall


@dataclass
class Recorder:
    """Receive times and latencies (now - the sender's timestamp) of one receiver, bounded in memory."""

    # Quick runs (the smoke test) send a handful of frames: only the very first one is left out there.
    warmup: float = field(default_factory=lambda: 0.0 if os.environ.get("EFBENCH_QUICK") == "1" else 0.25)
    times: list[float] = field(default_factory=list)
    lat_ms: list[float] = field(default_factory=list)
    count: int = 0
    first: float = 0.0
    cpu: CpuClock = field(default_factory=CpuClock)
    _started: bool = False

    def hit(self, sent_ts: float) -> None:
        """Record one message sent at `sent_ts` (time.time() on the sender)."""
        now = time.time()
        self.count += 1
        if self.count == 1:
            self.first = now
            return
        if not self._started:
            if now - self.first < self.warmup:
                return
            self._started = True
            self.cpu.start()
        if len(self.times) < _MAX_SAMPLES:
            self.times.append(now)
            self.lat_ms.append((now - sent_ts) * 1000.0)

    def summary(self) -> dict[str, Any]:
        """Rate over the measured window, latency percentiles and the CPU % of this process."""
        if self._started:
            self.cpu.stop()
        n = len(self.times)
        span = self.times[-1] - self.times[0] if n > 1 else 0.0
        return {
            "received": self.count,
            "measured": n,
            "rate": (n - 1) / span if span > 0 else float("nan"),
            "p50_ms": percentile(self.lat_ms, 50),
            "p99_ms": percentile(self.lat_ms, 99),
            "cpu_pct": self.cpu.pct,
        }


def announce(kind: str, payload: dict[str, Any]) -> None:
    """Tell the parent READY or RESULT (one line of JSON on stdout)."""
    sys.stdout.write(f"{kind} {json.dumps(payload, allow_nan=True)}\n")
    sys.stdout.flush()


class Child:
    """One benchmark process running `target` ("module:function") with JSON kwargs."""

    def __init__(self, target: str, env: dict[str, str] | None = None, **kwargs: Any) -> None:
        self.target = target
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", target, json.dumps(kwargs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=full_env,
            start_new_session=True,
        )
        self._buf = b""
        self._pending: list[str] = []
        self.ready: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def _lines(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return []
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return [""]
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [ln.decode(errors="replace") for ln in lines]

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        """Wait for the child's `kind` line (READY or RESULT) and return its JSON."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pending:
                self._pending += self._lines(min(0.2, max(0.0, deadline - time.monotonic())))
            while self._pending:
                # Lines after this one stay for the next call: a fast child's READY and RESULT come in one read.
                line = self._pending.pop(0)
                if line == "":
                    self._pending.insert(0, line)  # the end stays the end
                    raise RuntimeError(f"{self.target} exited before {kind}: {self.stderr_tail()}")
                if line.startswith(kind + " "):
                    data: dict[str, Any] = json.loads(line[len(kind) + 1 :])
                    return data
        raise TimeoutError(f"{self.target} sent no {kind} within {timeout:.0f}s: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr (after it exited or was killed)."""
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")[-1500:]

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for RESULT, then for the exit; kill the child if it overstays."""
        try:
            self.result = self.wait_for("RESULT", timeout)
            return self.result
        finally:
            self.kill(grace=3.0)

    def kill(self, grace: float = 0.0) -> None:
        """End the child (it is ours, by pid)."""
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_pair(
    sub: tuple[str, dict[str, Any]],
    pub: tuple[str, dict[str, Any]],
    timeout: float,
    env: dict[str, str] | None = None,
    watch: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the subscriber, wait until it is READY, start the publisher with what READY said; return both RESULTs."""
    s = Child(sub[0], env, **sub[1])
    p: Child | None = None
    try:
        extra = s.wait_for("READY", 30)
        p = Child(pub[0], env, **{**pub[1], **extra})
        if watch is not None:
            watch()
        pres = p.finish(timeout)
        sres = s.finish(timeout)
        return sres, pres
    finally:
        for c in (s, p):
            if c is not None and c.proc.poll() is None:
                c.kill()


def report(
    case: str, broker: str, sub: dict[str, Any], payload: int, cpu: dict[str, float], note: str = ""
) -> list[dict[str, Any]]:
    """Turn a receiver summary into rows: rate, MB/s, p50, p99 and the CPU % of each process."""
    rate = sub["rate"]
    rows = [
        row(case, broker, "rate", rate, "msg/s", note),
        row(case, broker, "mb_per_s", rate * payload / 1e6, "MB/s", note),
        row(case, broker, "p50_ms", sub["p50_ms"], "ms", note),
        row(case, broker, "p99_ms", sub["p99_ms"], "ms", note),
    ]
    rows += [row(case, broker, f"cpu_{who}", pct, "%", note) for who, pct in cpu.items()]
    return rows
