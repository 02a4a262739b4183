"""Redis Cluster: frames/s with 1, 2 and 3 shards, one source per shard, and what `wait_replicas=1` costs.

For each shard count a fresh cluster of that many masters (no replicas) on loopback; one process per shard runs a
producer and a sink over a durable link (durable, so that every frame goes through Redis whatever runs in one
process), the producer's app named so that its topic's slot is on its own shard. The processes start together and
each measures its own window; the rate of a shard count is their sum. Every process, and every redis-server, is
on this machine: where the machine has fewer cores than the processes need, the sum stops growing at the cores,
not at Redis (the CPU of each redis-server is reported with it).

The WAIT rows: one shard with one replica, the same link with and without `?wait_replicas=1`. The first row of
each size is the same process on one plain Redis: what the cluster client costs.
"""

from __future__ import annotations

import uuid
from typing import Any

from edgeflow.brokers.redis.keys import hash_tag
from edgeflow.testing.cluster import LocalCluster

from .._harness import FRAME_BYTES, MSG_BYTES, Child, ServerCpu, Settings, row

_NODE = "benchmarks._linkapp:node_proc"
SIZES = {FRAME_BYTES: "640x480x3", MSG_BYTES: "100 B"}


def _apps_on_distinct_shards(cluster: LocalCluster, count: int) -> list[str]:
    """App names whose producer topic (`src`) hashes to `count` different masters."""
    names: list[str] = []
    ports: set[int] = set()
    while len(names) < count:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        port = cluster.server_of_slot(cluster.keyslot(hash_tag(name, "src"))).port
        if port not in ports:
            ports.add(port)
            names.append(name)
    return names


def _run_sources(url: str, apps: list[str], size: int, cfg: Settings) -> list[dict[str, Any]]:
    """One producer+sink process per app, started together; each one's RESULT."""
    duration = cfg.duration + (0 if cfg.quick else 2.0)
    kw: dict[str, Any] = {"url": url, "broker": "redis", "size": size, "rate": None, "qos": "durable",
                          "duration": duration, "max_frames": cfg.max_frames, "deadline": duration + 20,
                          "nodes": ["src", "dst"]}  # fmt: skip
    kids = [Child(_NODE, app_name=a, **kw) for a in apps]
    try:
        # Each announces READY, then its RESULT; a quick one may send both at once: wait for RESULT alone.
        return [k.finish(duration + 60) for k in kids]
    finally:
        for k in kids:
            if k.proc.poll() is None:
                k.kill()


def _shards(size: int, shards: int, cfg: Settings) -> list[dict[str, Any]]:
    case = f"Redis Cluster: {SIZES[size]} durable, one source per shard"
    system = f"edgeflow redis-cluster {shards} shard{'s' * (shards > 1)}"
    with LocalCluster(masters=shards, replicas=0) as cluster:
        apps = _apps_on_distinct_shards(cluster, shards)
        cpus = [ServerCpu(s.proc.pid if s.proc else None) for s in cluster.servers]
        try:
            results = _run_sources(cluster.url, apps, size, cfg)
        except (RuntimeError, TimeoutError) as exc:
            return [row(case, system, "error", float("nan"), "", str(exc)[-300:])]
        redis_cpu = [c.stop() for c in cpus]
    rates = [r["rate"] for r in results]
    note = "per shard " + ", ".join(f"{r:,.0f}" for r in rates)
    return [
        row(case, system, "rate", sum(rates), "msg/s", note),
        row(case, system, "mb_per_s", sum(rates) * size / 1e6, "MB/s", note),
        row(case, system, "p50_ms", max(r["p50_ms"] for r in results), "ms", "the slowest shard's"),
        row(case, system, "cpu_redis", sum(redis_cpu), "%", "all shards' redis-servers together"),
        row(case, system, "cpu_proc", sum(r["cpu_pct"] for r in results), "%", "all producer+sink processes"),
    ]


def _one_redis(size: int, cfg: Settings) -> list[dict[str, Any]]:
    """The same process on one Redis, not a cluster: what the cluster client costs."""
    from edgeflow.embedded import EmbeddedRedis

    case = f"Redis Cluster: {SIZES[size]} durable, one source per shard"
    system = "edgeflow redis (one Redis, no cluster)"
    server = EmbeddedRedis().start()
    try:
        cpu = ServerCpu(server.proc.pid if server.proc else None)
        (res,) = _run_sources(server.url, [f"bench-{uuid.uuid4().hex[:8]}"], size, cfg)
        redis_cpu = cpu.stop()
    except (RuntimeError, TimeoutError) as exc:
        return [row(case, system, "error", float("nan"), "", str(exc)[-300:])]
    finally:
        server.stop()
    return [
        row(case, system, "rate", res["rate"], "msg/s"),
        row(case, system, "mb_per_s", res["rate"] * size / 1e6, "MB/s"),
        row(case, system, "p50_ms", res["p50_ms"], "ms"),
        row(case, system, "cpu_redis", redis_cpu, "%"),
        row(case, system, "cpu_proc", res["cpu_pct"], "%"),
    ]


def _wait_cost(size: int, cfg: Settings) -> list[dict[str, Any]]:
    case = f"Redis Cluster: {SIZES[size]} durable, 1 shard with a replica"
    out: list[dict[str, Any]] = []
    with LocalCluster(masters=1, replicas=1) as cluster:
        for wait in (0, 1):
            system = f"edgeflow redis-cluster wait_replicas={wait}"
            (app,) = _apps_on_distinct_shards(cluster, 1)
            try:
                (res,) = _run_sources(cluster.url + f"?wait_replicas={wait}", [app], size, cfg)
            except (RuntimeError, TimeoutError) as exc:
                out.append(row(case, system, "error", float("nan"), "", str(exc)[-300:]))
                continue
            out += [
                row(case, system, "rate", res["rate"], "msg/s"),
                row(case, system, "p50_ms", res["p50_ms"], "ms"),
                row(case, system, "p99_ms", res["p99_ms"], "ms"),
            ]
    return out


def run(quick: bool) -> list[dict[str, Any]]:
    """Frames/s for 1, 2 and 3 shards (frames and small messages), then the cost of WAIT."""
    cfg = Settings.make(quick)
    rows: list[dict[str, Any]] = []
    counts = (1, 3) if quick else (1, 2, 3)
    for size in SIZES:
        rows += _one_redis(size, cfg)
        for shards in counts:
            rows += _shards(size, shards, cfg)
    for size in SIZES if not quick else (MSG_BYTES,):
        rows += _wait_cost(size, cfg)
    return rows
