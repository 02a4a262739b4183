"""Background threads of the runtime that never die silently: a loop that raises is logged and started again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..backoff import Backoff

__all__ = ["start_supervised"]


def start_supervised(
    loop: Callable[[], None], name: str, stop: threading.Event, logger: logging.Logger
) -> threading.Thread:
    """Run `loop` in a daemon thread until it returns or `stop` is set; if it raises, log it (with the traceback)
    and run it again after a jittered backoff."""

    def run() -> None:
        backoff = Backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                loop()
                return
            except Exception:
                logger.exception("%s failed; starting it again", name)
                if backoff.wait(stop):
                    return

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
