"""Helpers for testing pipelines: run an app in a background thread and stop it on demand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from ..app import EdgeApp
from ..runtime import run_app
from ..runtime.runner import summary
from ..runtime.workers import RunContext

__all__ = ["RunningApp", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class RunningApp:
    """Runs `app` (all nodes, or `names`) in a thread: `with RunningApp(app) as run: ...`, then `run.summary`."""

    def __init__(self, app: EdgeApp, names: Sequence[str] | None = None, *, embedded: bool = False) -> None:
        self.app = app
        self.names = list(names or app.nodes)
        self.embedded = embedded
        self.stop_event = threading.Event()
        self.summary: dict[str, dict[str, Any]] = {}
        self.error: BaseException | None = None
        self._ctx: RunContext | None = None
        self._thread = threading.Thread(target=self._run, name=f"edgeflow-test-{app.name}", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = run_app(
                self.app, self.names, embedded=self.embedded, stop=self.stop_event, install_signals=False,
                started=self._started,
            )  # fmt: skip
        except BaseException as exc:
            self.error = exc

    def _started(self, ctx: RunContext) -> None:
        self._ctx = ctx

    def stats(self, node: str) -> dict[str, Any]:
        """The node's counters now, summed over its replicas (empty before the run started)."""
        if self._ctx is None:
            return {}
        return summary(self._ctx, [node]).get(node, {})

    def alive(self, node: str) -> bool:
        """True while every replica of `node` runs (its thread is alive and it is not restarting)."""
        if self._ctx is None:
            return False
        mine = [w for w in self._ctx.workers if w.spec.name == node]
        return bool(mine) and all(
            w.thread is not None and w.thread.is_alive() and w.stats.state == "running" for w in mine
        )

    def start(self) -> RunningApp:
        """Start the app."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """Stop the app and return its final counters; re-raise what the run raised."""
        self.stop_event.set()
        return self._join(timeout, "stop")

    def wait(self, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
        """Wait for the app to end by itself (its producers ended) and return its counters."""
        return self._join(timeout, "end")

    def _join(self, timeout: float, what: str) -> dict[str, dict[str, Any]]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"app {self.app.name!r} did not {what} within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.summary

    def __enter__(self) -> RunningApp:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread.is_alive():
            self.stop()
