"""What the shared-memory tests share."""

from __future__ import annotations

import time
from typing import Any


def read_one(sub: Any, timeout: float = 5.0) -> Any:
    """The first delivery `sub` reads within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sub.read(0.05)
        if got:
            return got[0]
    raise AssertionError("no frame arrived")
