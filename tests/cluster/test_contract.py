"""The broker contract on a Redis Cluster: every promise of the Redis broker holds with keys spread over shards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from edgeflow import RedisBroker
from edgeflow.testing.cluster import LocalCluster
from edgeflow.testing.contract import BrokerContract


@pytest.fixture
def contract_broker(request: pytest.FixtureRequest, redis_cluster: LocalCluster) -> Iterator[RedisBroker]:
    """The contract's broker: the Redis broker on the session's cluster, every frame through Redis."""
    redis_cluster.wait_ok()
    broker = RedisBroker(redis_cluster.url, local_links=getattr(request.cls, "in_process", True))
    broker.bind(f"contract-{uuid.uuid4().hex[:10]}")
    broker.connect()
    yield broker
    broker.close()


class TestClusterContract(BrokerContract):
    """The contract over a three-master cluster, as between processes (no in-process shortcut)."""

    in_process = False


@pytest.fixture
def waiting_broker(redis_cluster: LocalCluster) -> Iterator[RedisBroker]:
    """The broker on the cluster, its durable writes waiting for a replica (WAIT 1)."""
    redis_cluster.wait_ok()
    broker = RedisBroker(redis_cluster.url + "?wait_replicas=1&wait_timeout=2", local_links=False)
    broker.bind(f"contract-{uuid.uuid4().hex[:10]}")
    broker.connect()
    yield broker
    broker.close()


class TestClusterContractWaitingForReplicas(BrokerContract):
    """The contract with `wait_replicas=1` (from the URL): durable frames are confirmed once a replica has them."""

    in_process = False

    @pytest.fixture
    def contract_broker(self, waiting_broker: RedisBroker) -> RedisBroker:
        assert waiting_broker.wait_replicas == (1, 2000)
        return waiting_broker


@pytest.fixture(params=["shm", "shm-channel"])
def shm_cluster_broker(request: pytest.FixtureRequest, redis_cluster: LocalCluster) -> Iterator[Any]:
    """edgeflow-shm's broker (the Redis broker with payloads in shared memory) on the cluster, both ways."""
    import edgeflow_shm.plugin
    from edgeflow.plugins import get_plugin_manager
    from edgeflow_shm import ShmBroker

    pm = get_plugin_manager()
    pm.register(edgeflow_shm.plugin, name="shm")
    redis_cluster.wait_ok()
    opts: dict[str, Any] = {"shm_min_bytes": 0, "shm_local": False} if request.param == "shm" else {}
    broker = ShmBroker(redis_cluster.url, local_links=False, **opts)
    broker.bind(f"contract-{uuid.uuid4().hex[:10]}")
    broker.connect()
    try:
        yield broker
    finally:
        broker.close()
        pm.unregister(name="shm")


class TestShmContractOnTheCluster(BrokerContract):
    """edgeflow-shm on the cluster: its registration and channel keys carry their topic's hash tag."""

    in_process = False

    @pytest.fixture
    def contract_broker(self, shm_cluster_broker: Any) -> Any:
        return shm_cluster_broker
