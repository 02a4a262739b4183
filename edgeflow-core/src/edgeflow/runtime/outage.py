"""A broker outage as a worker sees it: logged once when it starts and once when it ends, retried with backoff."""

from __future__ import annotations

import logging
import threading
import time

from ..backoff import Backoff
from ..errors import BrokerError

__all__ = ["Outage"]


class Outage:
    """Tracks one worker's broker failures; waits between tries with the shared jittered backoff."""

    def __init__(self, logger: logging.Logger, stop: threading.Event) -> None:
        self.logger = logger
        self.stop = stop
        self.since: float | None = None
        self.backoff = Backoff(0.1, 2.0)
        self.next_try = 0.0
        #: Outages this worker came back from: each one a reconnection to the broker.
        self.reconnects = 0

    def failed(self, exc: BrokerError, *, wait: bool = True) -> None:
        """Count a failure (logged when an outage starts); wait out the backoff unless `wait` is False."""
        if self.since is None:
            self.since = time.monotonic()
            self.logger.warning("broker unreachable, retrying with backoff: %s", exc)
        delay = self.backoff.failed()
        self.next_try = time.monotonic() + delay
        if wait:
            self.stop.wait(delay)

    def should_try(self) -> bool:
        """False while a backoff after a failure has not run out."""
        return self.since is None or time.monotonic() >= self.next_try

    def ok(self) -> None:
        """Note a success; logs the end of an outage."""
        if self.since is not None:
            self.logger.warning("broker reachable again after %.1fs", time.monotonic() - self.since)
            self.since = None
            self.reconnects += 1
            self.backoff.reset()
