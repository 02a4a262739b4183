"""One backoff for every retry loop: redis-py's exponential backoff with jitter, counting failures."""

from __future__ import annotations

import threading

from redis.backoff import ExponentialWithJitterBackoff

__all__ = ["Backoff"]


class Backoff:
    """Delays that grow with each failure, jittered so that many retrying clients don't retry in step.

    `failed()` counts a failure and returns how long to wait before the next try; `reset()` after a success.
    """

    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        #: The redis-py backoff behind it, for `redis.retry.Retry(backoff.policy, retries)`.
        self.policy = ExponentialWithJitterBackoff(cap=cap, base=base)
        self.base = base
        self.cap = cap
        self.failures = 0

    def failed(self) -> float:
        """Count one failure; return the seconds to wait before trying again (at least `base / 4`)."""
        delay = max(self.policy.compute(self.failures), self.base / 4)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0

    def wait(self, stop: threading.Event) -> bool:
        """Count one failure and wait its delay, or less if `stop` is set; return True when stopped."""
        return stop.wait(self.failed())
