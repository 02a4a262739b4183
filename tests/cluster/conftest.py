"""A real Redis Cluster for the session: three masters, each with a replica, on loopback (edgeflow.testing.cluster).

Tests that kill or reshard nodes leave the cluster whole again: a killed master is started again and rejoins as
its replica's replica.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from edgeflow import RedisBroker
from edgeflow.embedded import find_server_binary
from edgeflow.testing.cluster import LocalCluster, find_cli_binary


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """Three masters and three replicas, joined by `redis-cli --cluster create`."""
    if find_server_binary() is None or find_cli_binary() is None:
        pytest.fail("a Redis Cluster needs redis-server and redis-cli: apt-get install redis-server redis-tools, "
                    "or run scripts/bootstrap.sh test", pytrace=False)  # fmt: skip
    cluster = LocalCluster(masters=3, replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """The session cluster's `redis+cluster://` URL, the whole cluster healthy."""
    redis_cluster.wait_ok()
    return redis_cluster.url


@pytest.fixture
def cluster_broker(cluster_url: str) -> Iterator[RedisBroker]:
    """A connected broker on the cluster, scoped to a fresh app."""
    broker = RedisBroker(cluster_url)
    broker.bind(f"c{uuid.uuid4().hex[:10]}")
    broker.connect()
    yield broker
    broker.close()


def spread(cluster: LocalCluster, namespace: str, count: int, prefix: str = "cam") -> list[str]:
    """`count` topic names of the app `namespace` whose keys land on `count` different masters."""
    from edgeflow.brokers.redis.keys import hash_tag

    names: list[str] = []
    ports: set[int] = set()
    for i in range(1000):
        name = f"{prefix}{i}"
        port = cluster.server_of_slot(cluster.keyslot(hash_tag(namespace, name))).port
        if port not in ports:
            ports.add(port)
            names.append(name)
            if len(names) == count:
                return names
    raise AssertionError(f"no {count} topics of {namespace!r} on {count} different masters")
