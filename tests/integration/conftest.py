"""The broker contract: the broker tests in this folder run against every broker listed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from edgeflow import Broker, RedisBroker
from edgeflow.embedded import EmbeddedRedis


def _redis(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    return RedisBroker(control.url)


#: name -> factory(control server, data server). A broker plugin adds itself here to be held to the contract.
BROKERS: dict[str, Callable[[EmbeddedRedis, EmbeddedRedis], Broker]] = {"redis": _redis}


@pytest.fixture(params=sorted(BROKERS))
def broker(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, data_redis_server: EmbeddedRedis, app_name: str
) -> Iterator[Broker]:
    """A connected broker of each registered kind, scoped to a fresh app."""
    b = BROKERS[request.param](redis_server, data_redis_server)
    b.bind(app_name)
    b.connect()
    yield b
    b.close()
