"""The broker contract: the broker tests in this folder run against every broker listed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from edgeflow import Broker, RedisBroker
from edgeflow.embedded import EmbeddedRedis
from edgeflow_dualredis import DualRedisBroker
from edgeflow_shm import ShmBroker


def _redis(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    return RedisBroker(control.url)


def _dualredis(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    return DualRedisBroker(control.url, data.url)


def _dualredis_refs(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    # Every payload through the data plane: the contract's frames are small and would otherwise stay inline.
    return DualRedisBroker(control.url, data.url, inline_threshold=0)


def _shm(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    # Every payload through shared memory: the contract's frames are small and would otherwise stay inline.
    # Stream entries for every frame, as with readers on other hosts.
    return ShmBroker(control.url, shm_min_bytes=0, shm_local=False)


def _shm_channel(control: EmbeddedRedis, data: EmbeddedRedis) -> Broker:
    # Realtime links whose readers are all on this host go through the channel, without stream entries.
    return ShmBroker(control.url)


#: name -> factory(control server, data server). A broker plugin adds itself here to be held to the contract.
BROKERS: dict[str, Callable[[EmbeddedRedis, EmbeddedRedis], Broker]] = {
    "redis": _redis,
    "dualredis": _dualredis,
    "dualredis-refs": _dualredis_refs,
    "shm": _shm,
    "shm-channel": _shm_channel,
}


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
