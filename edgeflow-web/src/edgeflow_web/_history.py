"""The last minutes of the pipeline's figures, one sample a second: what the dashboard's charts draw.

Kept in the gateway, not the browser, so that a dashboard opened now shows the minutes before it was opened.
Bounded: `seconds` samples of a few numbers per node and link (600 by default, ten minutes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["History"]

log = logging.getLogger("edgeflow.web")
_NODE_FIELDS = ("fps", "e2e_p50", "e2e_p99", "dropped", "failed")


class History:
    """Samples the gateway's aggregator once a second into a ring of `seconds` entries.

    Args:
        source: returns (nodes, links) as `StatsAggregator.nodes()` and `.links()` give them.
        seconds: how many samples (seconds) to keep.
    """

    def __init__(self, source: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]],
                 seconds: int = 600) -> None:  # fmt: skip
        self.source = source
        self.samples: deque[dict[str, Any]] = deque(maxlen=seconds)
        self._totals: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, now: float | None = None) -> dict[str, Any]:
        """Take one sample now: per node fps, end-to-end p50/p99, drops and failures per second; per link depth."""
        nodes, links = self.source()
        entry: dict[str, Any] = {"ts": round(time.time() if now is None else now, 3), "nodes": {}, "links": {}}
        for n in nodes:
            name = str(n.get("name"))
            dropped, failed = int(n.get("dropped") or 0), int(n.get("failed") or 0)
            before = self._totals.get(name, (dropped, failed))
            self._totals[name] = (dropped, failed)
            entry["nodes"][name] = {
                "fps": n.get("fps_out") if n.get("type") == "producer" else n.get("fps_in"),
                "e2e_p50": n.get("e2e_ms_p50"),
                "e2e_p99": n.get("e2e_ms_p99"),
                # Per second, since the previous sample: a counter that restarted counts from zero again.
                "dropped": max(0, dropped - before[0]),
                "failed": max(0, failed - before[1]),
            }
        for ln in links:
            entry["links"][f"{ln.get('source')}->{ln.get('target')}"] = ln.get("depth")
        with self._lock:
            self.samples.append(entry)
        return entry

    def series(self, seconds: float | None = None) -> dict[str, Any]:
        """Return the samples of the last `seconds` as columns: ts, then per node each figure, per link depth."""
        with self._lock:
            samples = list(self.samples)
        if seconds is not None and samples:
            since = samples[-1]["ts"] - seconds
            samples = [s for s in samples if s["ts"] >= since]
        names = list(dict.fromkeys(n for s in samples for n in s["nodes"]))
        links = list(dict.fromkeys(k for s in samples for k in s["links"]))
        return {
            "ts": [s["ts"] for s in samples],
            "nodes": {n: {f: [s["nodes"].get(n, {}).get(f) for s in samples] for f in _NODE_FIELDS} for n in names},
            "links": {k: [s["links"].get(k) for s in samples] for k in links},
        }

    def start(self, interval: float = 1.0) -> None:
        """Sample every `interval` seconds from a daemon thread."""
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="edgeflow-web-history", daemon=True)
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sample()
            except Exception:  # never silent, never the end of the history either
                log.exception("web: sampling the history failed")

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
