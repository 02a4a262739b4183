"""The streams and groups the rendered KEDA triggers name are those a running app reads: the app runs against a
real redis-server, and each trigger's stream and consumer group is looked up with XINFO (no Kubernetes here: KEDA
itself can't run; what it would query is checked against the Redis it would query)."""

from __future__ import annotations

from typing import Any

import redis

from edgeflow import RedisBroker
from edgeflow.testing import RunningApp, wait_for
from edgeflow_k8s import RenderOptions, render

from .test_scaling import IMAGE, scaled_app


def _groups(client: Any, stream: str) -> dict[str, dict[str, Any]]:
    try:
        return {g["name"].decode(): g for g in client.xinfo_groups(stream)}
    except redis.ResponseError:
        return {}


def test_triggers_name_the_streams_and_groups_the_running_app_reads(redis_url: str, app_name: str) -> None:
    app = scaled_app(app_name)
    app._broker = RedisBroker(redis_url)  # the app under test, on the session's Redis
    objects = render(app, RenderOptions(IMAGE, "robot", redis_url=redis_url))
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    triggers = [(o["metadata"]["name"], t) for o in scaled for t in o["spec"]["triggers"]]
    assert len(triggers) == 3
    client = redis.Redis.from_url(redis_url)
    with RunningApp(app, ["camera", "gpu_det", "store"]) as run:
        for name, trigger in triggers:
            meta = trigger["metadata"]
            assert meta["address"] == redis_url.split("//", 1)[1].split("/", 1)[0]
            group = meta["consumerGroup"]
            # The node's replicas joined the group on that stream and take its entries.
            assert wait_for(lambda s=meta["stream"], g=group: _groups(client, s).get(g, {}).get("consumers", 0) >= 1,
                            timeout=15), (name, meta, client.keys("ef:*"))  # fmt: skip
            info = _groups(client, meta["stream"])[group]
            assert wait_for(lambda s=meta["stream"], g=group: int(_groups(client, s)[g]["entries-read"] or 0) > 0, 15)
            assert info["lag"] is not None, "Redis 7 reports the lag KEDA's lagCount reads"
        run.stop()
    client.close()
