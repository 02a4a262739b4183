"""Fixtures of the shared-memory tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from edgeflow.embedded import EmbeddedRedis
from edgeflow_shm import ShmBroker


@pytest.fixture
def make(redis_server: EmbeddedRedis, app_name: str) -> Iterator[Any]:
    """Brokers of one app, as separate processes would have them; closed after the test. Each is its own broker
    object, so none would hand frames over in memory anyway; local_links=False leaves the channel's objects bare."""
    made: list[ShmBroker] = []

    def _make(**kw: Any) -> ShmBroker:
        b = ShmBroker(redis_server.url, local_links=False, **kw)
        b.bind(app_name)
        b.connect()
        made.append(b)
        return b

    yield _make
    for b in made:
        b.close()
