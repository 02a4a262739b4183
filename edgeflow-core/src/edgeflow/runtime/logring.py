"""The recent log lines of one node replica, kept in a small ring and published in its statistics record.

`edgeflow logs main.py NODE` reads them from the control plane, so a local run needs no log files and no access
to the machines the replicas run on. The ring is bounded twice, in lines and in characters a line, so a replica's
statistics record stays small (at most ~6 KiB of lines) however much it logs; each line carries a sequence number,
so that a reader following the ring can count the lines that went past between two reports.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

__all__ = ["LINE_CHARS", "LOG_LINES", "LogRing"]

#: Lines a replica keeps and publishes; older ones are pushed out (a reader sees the gap in the sequence numbers).
LOG_LINES = 20
#: Characters kept of a record's first line (the only one kept); the rest is cut, marked with "...".
LINE_CHARS = 240


class LogRing(logging.Handler):
    """A logging handler keeping the last `lines` records of the logger it is added to, as JSON-ready dicts."""

    def __init__(self, lines: int = LOG_LINES, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.lines: deque[dict[str, Any]] = deque(maxlen=lines)
        self.seq = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep `record` (called under the handler's lock by `logging`)."""
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments don't fit its format: keep the format, as logging would
            message = str(record.msg)
        # One line a record: a traceback's first line says what failed; the process's console has the rest.
        first, _, rest = message.partition("\n")
        if rest:
            message = f"{first} (+{rest.count(chr(10)) + 1} lines: traceback)"
        if len(message) > LINE_CHARS:
            message = message[: LINE_CHARS - 3] + "..."
        self.seq += 1
        self.lines.append({"seq": self.seq, "ts": round(record.created, 3), "level": record.levelname, "msg": message})

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the lines kept, oldest first (a copy, safe to publish from another thread)."""
        self.acquire()
        try:
            return list(self.lines)
        finally:
            self.release()
