"""Per-stage latency tracing: the hop times a frame carries, and the breakdown of a path into stages.

Each frame carries a list of stamps `(node index, kind, time)`: made at its producer, written to the broker,
read by the next node, that node's process start and end, written or sent on, received at a gateway or sink.
The node index is the node's position in the app's declaration order, the same in every process that loads
the app file; the time is in microseconds since the frame's timestamp, as `frame.encode` puts it in the header (ints
all the way: packing and unpacking a trace is one struct call).

Two consecutive stamps make a stage: `queue` (waiting in a link or before `process()`), `process` (user code)
or `transfer` (encoding and the wire). A stage between two nodes subtracts clocks of two hosts when the nodes
run on different machines: it is exact on one host, and only as good as the hosts' clock synchronisation across
hosts (docs/observability.md).
"""

from __future__ import annotations

import math
import os
import random
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any

__all__ = [
    "END",
    "KINDS",
    "MADE",
    "MAX_STAMPS",
    "READ",
    "RECEIVED",
    "SENT",
    "STAMP",
    "START",
    "UNKNOWN_NODE",
    "WRITTEN",
    "Stamp",
    "TraceSampler",
    "breakdown",
    "enabled",
    "offset_us",
    "pack_stamps",
    "percentile",
    "rate_limit",
    "stage_defs",
    "stamps",
]

MADE, WRITTEN, READ, START, END, SENT, RECEIVED = range(7)
#: The stamp kinds by number, as they travel.
KINDS = ("made", "written", "read", "start", "end", "sent", "received")
#: Stamps a frame carries at most (a path of about fifteen nodes); later hops are not stamped.
MAX_STAMPS = 64
#: The node index of a node past the 255th (one byte on the wire).
UNKNOWN_NODE = 255

#: (node index, stamp kind, microseconds since the frame's timestamp)
Stamp = tuple[int, int, int]
#: A stamp as it travels, and as `Frame.trace` keeps it: node u8, kind u8, offset i32, little-endian.
STAMP = struct.Struct("<BBi")
_I32 = 2**31 - 1


def stamps(trace: bytes | None) -> list[Stamp]:
    """Unpack a frame's `trace` into (node index, kind, microseconds since its timestamp) stamps."""
    if not trace:
        return []
    return list(STAMP.iter_unpack(trace[: len(trace) - len(trace) % STAMP.size]))


def pack_stamps(items: Iterable[Stamp]) -> bytes:
    """Pack stamps as `Frame.trace` keeps them."""
    return b"".join(STAMP.pack(*s) for s in items)


def offset_us(t: float, ts: float) -> int:
    """Return `t` as microseconds since `ts`, clamped to an i32 (+-35 minutes)."""
    us = int((t - ts) * 1e6)
    return us if -_I32 <= us <= _I32 else (_I32 if us > 0 else -_I32)


#: Frames a producer traces a second at most, by default: every frame of any camera, a sample of faster streams.
DEFAULT_RATE = 1000.0


def enabled() -> bool:
    """True unless EDGEFLOW_TRACE turns tracing off (0, false, no, off)."""
    return os.environ.get("EDGEFLOW_TRACE", "1").strip().lower() not in ("0", "false", "no", "off")


def rate_limit() -> float:
    """Frames a producer traces a second at most (EDGEFLOW_TRACE_RATE, default 1000; 0 traces every frame).

    The breakdown needs a few hundred frames a second; past that, tracing every frame of a 40,000 frames/s stream
    would only cost its CPU time. The frames not traced travel as before, as wire version 1.
    """
    raw = os.environ.get("EDGEFLOW_TRACE_RATE", "").strip()
    try:
        rate = float(raw) if raw else DEFAULT_RATE
    except ValueError:
        rate = DEFAULT_RATE
    return rate if rate > 0 and math.isfinite(rate) else math.inf


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Return the `q`-th percentile (0..100) of `samples` by nearest rank, or None when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def stage_defs(path: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Name the stages between consecutive stamps of `path` ((node, stamp kind) pairs, as records carry them).

    Each stage: name, node (where it ends), kind (queue, process, transfer), and `between`, the two nodes when
    the stage spans two nodes (and so, maybe, two clocks).
    """
    out: list[dict[str, Any]] = []
    for (a, _), (b, kb) in pairwise(path):
        if a != b:
            # Into another node: over TCP straight into a gateway (the wire), or through a broker's link, where
            # the frame mostly waits for its reader.
            kind = "transfer" if kb == "received" else "queue"
            out.append({"name": f"{a}->{b}", "node": b, "kind": kind, "between": [a, b]})
        elif kb == "start":
            out.append({"name": f"{b} wait", "node": b, "kind": "queue", "between": None})
        elif kb == "end":
            out.append({"name": f"{b} process", "node": b, "kind": "process", "between": None})
        elif kb in ("written", "sent"):
            out.append({"name": f"{b} send", "node": b, "kind": "transfer", "between": None})
        else:
            out.append({"name": f"{b} {kb}", "node": b, "kind": "queue", "between": None})
    return out


class TraceSampler:
    """A uniform sample of the traces that ended here in each reporting interval, per source (reservoir, Algorithm
    L: one random draw per replaced sample, not per frame, so that sampling costs a counter on the hot path)."""

    def __init__(self, names: Sequence[str], per_source: int = 64, max_sources: int = 16) -> None:
        self.names = list(names)
        self.k = per_source
        self.max_sources = max_sources
        self._res: dict[str, list[Any]] = {}  # source -> [samples, seen, next index to replace, W]

    def add(self, source: str, trace: bytes | None) -> None:
        """Offer the finished `trace` of a frame that came from `source`."""
        if not trace:
            return
        r = self._res.get(source)
        if r is None:
            if len(self._res) >= self.max_sources:
                return
            r = self._res[source] = [[], 0, 0, 0.0]
        r[1] += 1
        seen = r[1]
        samples = r[0]
        if seen <= self.k:
            samples.append(trace)
            if seen == self.k:
                r[3] = math.exp(math.log(random.random() or 1e-12) / self.k)
                r[2] = seen + self._skip(r[3])
            return
        if seen == r[2]:
            samples[random.randrange(self.k)] = trace
            r[3] *= math.exp(math.log(random.random() or 1e-12) / self.k)
            r[2] = seen + self._skip(r[3])

    @staticmethod
    def _skip(w: float) -> int:
        if w >= 1.0:
            return 1 << 62
        return int(math.log(random.random() or 1e-12) / math.log(1.0 - w)) + 1 if w > 0 else 1

    def drain(self) -> list[dict[str, Any]]:
        """Return the sampled traces since the last drain, grouped by path: {"path", "samples" (ms per stage)}."""
        res, self._res = self._res, {}
        names = self.names
        paths: dict[tuple[tuple[int, int], ...], list[list[float]]] = {}
        # 256 samples a report at most, shared by the sources: a report stays well under the aggregator's 64 KiB.
        share = max(8, 256 // max(1, len(res)))
        for samples, _, _, _ in res.values():
            for raw in samples[:share]:
                trace = stamps(raw)
                key = tuple((n, k) for n, k, _ in trace)
                times = [t for _, _, t in trace]
                paths.setdefault(key, []).append([(b - a) / 1000.0 for a, b in pairwise(times)])
        out = []
        for key, got in paths.items():
            path = [[names[n] if n < len(names) else f"#{n}", KINDS[k] if k < len(KINDS) else str(k)] for n, k in key]
            out.append({"path": path, "samples": got})
        return out


def breakdown(
    paths: Iterable[tuple[Sequence[Sequence[str]], Sequence[Sequence[float]]]],
    cross_host: Callable[[str, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Turn sampled traces into the per-stage breakdown of each path: p50 and p99 per stage, the totals, and the
    slowest stage (by p50).

    `paths` yields (path, samples) pairs as `TraceSampler.drain` makes them, many per path allowed;
    `cross_host(a, b)` says whether nodes `a` and `b` may run on different hosts (default: assume they may).
    """
    merged: dict[tuple[tuple[str, str], ...], list[Sequence[float]]] = {}
    for path, samples in paths:
        key = tuple((str(n), str(k)) for n, k in path)
        merged.setdefault(key, []).extend(s for s in samples if len(s) == len(key) - 1)
    out = []
    for key, samples in merged.items():
        if not samples or len(key) < 2:
            continue
        defs = stage_defs(key)
        stages = []
        for i, d in enumerate(defs):
            column = [s[i] for s in samples]
            between = d["between"]
            skew = bool(between) and (cross_host(*between) if cross_host is not None else True)
            stages.append(
                {"name": d["name"], "node": d["node"], "kind": d["kind"], "p50_ms": _round(percentile(column, 50)),
                 "p99_ms": _round(percentile(column, 99)), "cross_host": skew}
            )  # fmt: skip
        totals = [sum(s) for s in samples]
        slowest = max(stages, key=lambda s: s["p50_ms"] or 0.0)
        out.append(
            {"nodes": list(dict.fromkeys(n for n, _ in key)), "stages": stages,
             "total_p50_ms": _round(percentile(totals, 50)), "total_p99_ms": _round(percentile(totals, 99)),
             "slowest": slowest["name"], "samples": len(samples)}
        )  # fmt: skip
    out.sort(key=lambda p: (p["nodes"], len(p["stages"])))
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
