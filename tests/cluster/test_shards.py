"""Keys on a cluster: one slot per topic, topics over the shards; a pipeline whose sources live on three shards."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from edgeflow import EdgeApp, Frame, RedisBroker
from edgeflow.nodes import ConsumerNode, ProducerNode, SinkNode
from edgeflow.testing import RunningApp, wait_for
from edgeflow.testing.cluster import LocalCluster
from edgeflow.testing.contract import drain, durable, realtime

from .conftest import spread


def test_every_key_of_a_topic_shares_one_slot_and_names_stay_on_one_redis(cluster_broker: RedisBroker) -> None:
    b = cluster_broker
    ns = b.namespace
    topic_keys = [b.stream_key("cam"), b.stream_key("cam", "durable"), b.stream_key("cam", "durable", "jpeg80"),
                  b.seen_key("cam", "det")]  # fmt: skip
    assert all(f"{{{ns}/cam}}" in k for k in topic_keys), topic_keys
    assert len({b.client.keyslot(k) for k in topic_keys}) == 1
    assert len({b.client.keyslot(k) for k in (b.dead_key("det"), b.replay_key("det"))}) == 1
    plain = RedisBroker("redis://127.0.0.1:1/0")
    plain.bind("robot")
    assert (plain.stream_key("cam"), plain.stream_key("cam", "durable", "jpeg80"), plain.seen_key("cam", "det"),
            plain.dead_key("det"), plain.replay_key("det")) == (
        "ef:robot:rt:cam", "ef:robot:dur:cam~jpeg80", "ef:robot:seen:cam:det", "ef:robot:dead:det",
        "ef:robot:replay:det")  # fmt: skip


def test_a_reader_of_topics_on_two_shards_gets_a_frame_on_either_at_once(
    redis_cluster: LocalCluster, cluster_broker: RedisBroker
) -> None:
    """One blocking read per shard in one pipeline would return only when the idle shard's read timed out."""
    a, b = spread(redis_cluster, cluster_broker.namespace, 2)
    sub = cluster_broker.subscribe([realtime(a, "det"), realtime(b, "det")], "c0")
    pub_b = cluster_broker.publisher(b, [realtime(b, "det")])
    assert sub.read(0.05) == []
    pub_b.publish(Frame(1, time.time(), {}, b"on b"))
    started = time.monotonic()
    got = drain(sub, 1, timeout=5.0)
    took = time.monotonic() - started
    assert [f.data for f in got] == [b"on b"]
    assert took < 1.0, f"a frame on {b}'s shard waited {took:.2f}s for the read of {a}'s idle shard"
    sub.close()
    pub_b.close()


def test_a_pipeline_whose_sources_live_on_three_shards(redis_cluster: LocalCluster, cluster_url: str,
                                                       app_name: str) -> None:  # fmt: skip
    topics = spread(redis_cluster, app_name, 3)
    frames = 60
    app = EdgeApp(app_name, broker=RedisBroker(cluster_url))
    got: list[tuple[str, int]] = []
    lock = threading.Lock()

    for t in topics:

        @app.node(name=t, type="producer", fps=None)
        class Camera(ProducerNode):
            def configure(self) -> None:
                self.i = 0

            def produce(self) -> Any:
                if self.i >= frames:
                    return None
                self.i += 1
                return np.full((8, 8), self.i, np.uint8)

    @app.node(name="merge", type="consumer", replicas=2)
    class Merge(ConsumerNode):
        def process(self, data: Any) -> Any:
            return {"source": self.current_source, "value": int(data[0, 0])}

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            with lock:
                got.append((data["source"], data["value"]))

    for t in topics:
        app.link(t).to("merge", qos="durable")
    app.link("merge").to("store")

    with RunningApp(app) as run:
        assert wait_for(lambda: len(set(got)) >= 3 * frames, timeout=30), f"{len(set(got))} of {3 * frames}"
        stopping = time.monotonic()
        summary = run.stop()
        assert time.monotonic() - stopping < 5.0
    assert sorted(set(got)) == sorted((t, i) for t in topics for i in range(1, frames + 1))
    assert summary["merge"]["failed"] == 0
    # Each source's durable stream is on its own master: the three shards carried the three sources.
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    owners = set()
    for t in topics:
        key = broker.stream_key(t, "durable")
        slot = redis_cluster.keyslot(key)
        holders = [m.port for m in redis_cluster.masters()
                   if redis_cluster.admin(m).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) and
                   redis_cluster.admin(m).execute_command("EXISTS", key)]  # fmt: skip
        assert len(holders) == 1, (key, holders)
        owners.add(holders[0])
    assert len(owners) == 3


def test_a_dead_letter_crosses_slots_in_order(cluster_broker: RedisBroker) -> None:
    """The letter lives on the target's slot, the entry on the source's: written, then acknowledged."""
    link = durable("imu", "logger", max_attempts=1)
    pub = cluster_broker.publisher("imu", [link])
    sub = cluster_broker.subscribe([link], "c0")
    pub.publish(Frame(3, 0.0, {}, "bad"))
    (d,) = sub.read(1.0)
    sub.dead_letter(d, "it kept failing")
    (letter,) = cluster_broker.dead_letters("logger")
    assert (letter["frame_id"], letter["error"]) == (3, "it kept failing")
    assert cluster_broker.link_backlog("imu", "logger") == (0, 0)
    assert cluster_broker.replay_dead_letters("logger") == 1
    assert [f.frame_id for f in drain(sub, 1, ack=True)] == [3]


@pytest.mark.parametrize("sharded", [True])
def test_the_control_plane_uses_sharded_pubsub_on_redis_7(cluster_broker: RedisBroker, sharded: bool) -> None:
    assert cluster_broker.sharded_pubsub is sharded
    listener = cluster_broker.listen("stats")
    assert listener.get(0.1) is None
    cluster_broker.emit("stats", b"x")
    assert wait_for(lambda: listener.get(0.1) == b"x", timeout=3)
    listener.close()
