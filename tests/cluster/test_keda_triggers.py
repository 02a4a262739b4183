"""On a Redis Cluster, the rendered KEDA triggers (redis-cluster-streams) name the hash-tagged streams and the
groups a running app reads, looked up with XINFO on the cluster."""

from __future__ import annotations

from typing import Any

import redis

from edgeflow import RedisBroker
from edgeflow.testing import RunningApp, wait_for
from edgeflow.testing.cluster import LocalCluster
from edgeflow_k8s import RenderOptions, render

from ..k8s.test_scaling import IMAGE, scaled_app


def test_cluster_triggers_name_the_streams_and_groups_the_running_app_reads(
    redis_cluster: LocalCluster, cluster_url: str, app_name: str
) -> None:
    app = scaled_app(app_name)
    app._broker = RedisBroker(cluster_url)
    objects = render(app, RenderOptions(IMAGE, "robot", redis_url=cluster_url))
    triggers = [t for o in objects if o["kind"] == "ScaledObject" for t in o["spec"]["triggers"]]
    assert {t["type"] for t in triggers} == {"redis-cluster-streams"}
    nodes = {f"127.0.0.1:{s.port}" for s in redis_cluster.servers}
    client: Any = redis.RedisCluster.from_url(f"redis://127.0.0.1:{redis_cluster.servers[0].port}/0")
    with RunningApp(app, ["camera", "gpu_det", "store"]) as run:
        for trigger in triggers:
            meta = trigger["metadata"]
            assert set(meta["addresses"].split(",")) == nodes
            assert "{" + app_name + "/" in meta["stream"], "the stream's hash tag, as the pods name it"

            def joined(m: dict[str, str] = meta) -> bool:
                try:
                    groups = {g["name"].decode(): g for g in client.xinfo_groups(m["stream"])}
                except redis.ResponseError:
                    return False
                g = groups.get(m["consumerGroup"])
                return g is not None and g["consumers"] >= 1 and int(g["entries-read"] or 0) > 0

            assert wait_for(joined, timeout=15), meta
        run.stop()
    client.close()
