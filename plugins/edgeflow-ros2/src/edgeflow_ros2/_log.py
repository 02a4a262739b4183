"""Logging of repeated problems: the first of each kind in full, then a count at most every few seconds."""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["Throttled"]


class Throttled:
    """Logs a problem of a given kind once, then how many more came, at most once per `every` seconds."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (last logged, not logged since)

    def __call__(self, kind: str, message: str, *, level: int = logging.WARNING) -> None:
        """Log `message` if `kind` was not logged in the last `every` seconds; count it otherwise."""
        now = time.monotonic()
        with self._lock:
            last, pending = self._kinds.get(kind, (-self.every, 0))
            if now - last < self.every:
                self._kinds[kind] = (last, pending + 1)
                return
            self._kinds[kind] = (now, 0)
        more = f" ({pending} more like it since the last report)" if pending else ""
        self.logger.log(level, "%s%s", message, more)
