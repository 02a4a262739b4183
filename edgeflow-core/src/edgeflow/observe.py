"""Looking inside a running pipeline from the command line: `edgeflow trace`, `edgeflow topic list|hz|echo`, and the
graph in Mermaid or Graphviz dot.

Where the figures come from:

* `trace` and `topic list` listen to the statistics channel (every replica reports once a second, traces sampled
  where paths end), so they read nothing of the frames themselves;
* `topic hz` and `topic echo` watch the topic's stream through the broker from outside every consumer group
  (`Broker.tail`: its realtime stream, or its durable one if it has no other): they hold nothing back and leave
  nothing behind, even if killed; frames pushed out before they read them are counted through the writer's
  sequence numbers.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from .errors import BrokerError, EdgeFlowError, LinkError
from .loader import load_app
from .runtime.stats import StatsAggregator
from .status import listen

if TYPE_CHECKING:
    from .app import EdgeApp
    from .broker import Broker

__all__ = ["render_graph", "topic_group", "trace_command"]

_APP = click.Path(exists=True, dir_okay=False)


# The graph ------------------------------------------------------------------------------------------------
def render_graph(desc: dict[str, Any], fmt: str) -> str:
    """Render `EdgeApp.describe()` as JSON, a Mermaid flowchart or a Graphviz dot digraph."""
    if fmt == "json":
        return json.dumps(desc, indent=2)
    nodes, links = desc.get("nodes", []), desc.get("links", [])
    if fmt == "mermaid":
        ids = {n["name"]: f"n{i}" for i, n in enumerate(nodes)}
        lines = ["flowchart LR"]
        for n in nodes:
            extra = f" x{n['replicas']}" if n.get("replicas", 1) > 1 else ""
            lines.append(f'  {ids[n["name"]]}["{n["name"]}<br/>{n["type"]}{extra}"]')
        for ln in links:
            label = ln["qos"] + (f" {ln['codec']}" if ln.get("codec") else "")
            arrow = "-.->" if ln["transport"] == "tcp" else "-->"
            lines.append(f"  {ids[ln['source']]} {arrow}|{ln['transport']} {label}| {ids[ln['target']]}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = [f"digraph {json.dumps(desc.get('app') or 'edgeflow')} {{", "  rankdir=LR;", "  node [shape=box];"]
        for n in nodes:
            extra = f" x{n['replicas']}" if n.get("replicas", 1) > 1 else ""
            lines.append(f"  {json.dumps(n['name'])} [label={json.dumps(n['name'] + chr(10) + n['type'] + extra)}];")
        for ln in links:
            label = f"{ln['transport']} {ln['qos']}" + (f" {ln['codec']}" if ln.get("codec") else "")
            style = ", style=dashed" if ln["transport"] == "tcp" else ""
            lines.append(
                f"  {json.dumps(ln['source'])} -> {json.dumps(ln['target'])} [label={json.dumps(label)}{style}];"
            )
        lines.append("}")
        return "\n".join(lines)
    raise click.BadParameter(f"unknown format {fmt!r}; use json, mermaid or dot", param_hint="--format")


# Listening to the statistics channel ------------------------------------------------------------------------
def _connected(app: EdgeApp) -> Broker:
    broker = app.broker
    broker.bind(app.name)
    broker.connect()
    return broker


def _gather(app: EdgeApp, seconds: float) -> StatsAggregator:
    """Listen to the app's statistics channel for `seconds`; return an aggregator holding what came."""
    return listen(app, max(seconds, 0.1))  # listen() takes 0 for "until interrupted"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 10 else f"{v:.1f}"


@click.command("trace")
@click.argument("app_file", type=_APP)
@click.option("--seconds", default=5.0, show_default=True, help="how long to gather traces")
@click.option("--json", "as_json", is_flag=True, help='print JSON: {"paths": [{"nodes", "stages", ...}]}')
def trace_command(app_file: str, seconds: float, as_json: bool) -> None:
    """Print the per-stage latency breakdown of each path of a running pipeline, slowest stage marked.

    Stages are queue (waiting in a link or before process()), process (your code) and transfer (encoding and
    the wire). A stage between nodes on two hosts subtracts two clocks: it is marked, and is as exact as NTP or
    PTP keeps the hosts. Traces come from the statistics channel, sampled where paths end (gateways, sinks).

    Example: edgeflow trace main.py --seconds 10 --json
    """
    app = load_app(app_file)
    agg = _gather(app, max(1.5, seconds))
    paths = agg.traces(window=seconds + 2.0)
    if as_json:
        click.echo(json.dumps({"paths": paths}, indent=2))
        return
    if not paths:
        nodes = sorted({str(r.get("node")) for r in agg.records()})
        seen = f"reports came from {', '.join(nodes)}" if nodes else "no node reported"
        raise click.ClickException(
            f"no traced frame reached a gateway or sink of {app.name!r} in {seconds:g}s ({seen}); is the pipeline "
            "running, with EDGEFLOW_TRACE unset or 1 on its producers?"
        )
    for p in paths:
        click.echo(f"{' -> '.join(p['nodes'])}   total p50 {_ms(p['total_p50_ms'])} ms  p99 {_ms(p['total_p99_ms'])} ms"
                   f"  ({p['samples']} frames)")  # fmt: skip
        width = max(len(s["name"]) for s in p["stages"]) + 2
        click.echo(f"    {'stage':<{width}}{'kind':<10}{'p50 ms':>9}{'p99 ms':>9}")
        for s in p["stages"]:
            mark = "*" if s["name"] == p["slowest"] else " "
            note = "  <- slowest" if mark == "*" else ""
            if s["cross_host"]:
                note += "  (across hosts: clock skew)"
            click.echo(f"  {mark} {s['name']:<{width}}{s['kind']:<10}{_ms(s['p50_ms']):>9}{_ms(s['p99_ms']):>9}{note}")
        click.echo("")


# Topics -----------------------------------------------------------------------------------------------------
@click.group("topic")
def topic_group() -> None:
    """Look at the topics of a running pipeline, as `ros2 topic` does: list, hz, echo.

    Example: edgeflow topic echo main.py detector -n 3
    """


@topic_group.command("list")
@click.argument("app_file", type=_APP)
@click.option("--seconds", default=2.0, show_default=True, help="how long to listen for the publishers' rates")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def topic_list(app_file: str, seconds: float, as_json: bool) -> None:
    """List the topics: the node publishing each, its rate now (from the statistics channel), who reads it.

    Example: edgeflow topic list main.py
    """
    app = load_app(app_file)
    nodes = {n["name"]: n for n in _gather(app, seconds).nodes()}
    rows = []
    for topic, publisher in app.topics().items():
        n = nodes.get(publisher, {})
        readers = [f"{ln.target} ({ln.transport} {ln.qos})" for ln in app.links_from(publisher)]
        rows.append({"topic": topic, "publisher": publisher, "status": n.get("status", "unknown"),
                     "fps": n.get("fps_out"), "readers": readers})  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max([len(r["topic"]) for r in rows] + [5]) + 2
    pub = max([len(r["publisher"]) for r in rows] + [9]) + 2
    click.echo(f"{'topic':<{width}}{'publisher':<{pub}}{'status':<9}{'fps':>8}  readers")
    for r in rows:
        fps = "-" if r["fps"] is None else f"{r['fps']:.1f}"
        click.echo(f"{r['topic']:<{width}}{r['publisher']:<{pub}}{r['status']:<9}{fps:>8}  {', '.join(r['readers'])}")


class _TopicReader:
    """Watches one topic through the broker, from now on, outside every consumer group (Broker.tail)."""

    def __init__(self, app: EdgeApp, topic: str) -> None:
        try:
            source = app.resolve_topic(topic, "edgeflow topic")
        except LinkError as exc:
            raise click.BadParameter(str(exc), param_hint="TOPIC") from exc
        links = app.links_from(source)
        if links and all(ln.transport == "tcp" for ln in links):
            raise click.ClickException(
                f"topic {topic!r} goes only over TCP into {', '.join(ln.target for ln in links)}: no broker stream "
                "carries it; the gateway's /api/status shows its latest value"
            )
        self.topic = app.nodes[source].topic
        self.broker = _connected(app)
        try:
            self.sub = self.broker.tail(self.topic)
        except BaseException:
            self.broker.close()
            raise

    def read(self, timeout: float) -> list[Any]:
        return [d.frame for d in self.sub.read(timeout)]

    def close(self) -> None:
        try:
            self.sub.close()
        except BrokerError:
            pass
        finally:
            self.broker.close()


@topic_group.command("hz")
@click.argument("app_file", type=_APP)
@click.argument("topic")
@click.option("--seconds", default=5.0, show_default=True, help="how long to measure (0: until Ctrl-C)")
@click.option("--window", default=100, show_default=True, help="frames the interval statistics are taken over")
def topic_hz(app_file: str, topic: str, seconds: float, window: int) -> None:
    """Print a topic's publishing rate once a second, with the intervals between the frames read.

    The rate counts the frames published, read or skipped (realtime: the newest frame wins), so it is the
    publisher's rate even when this reader falls behind.

    Example: edgeflow topic hz main.py detector --seconds 10
    """
    reader = _TopicReader(load_app(app_file), topic)
    arrivals: deque[float] = deque(maxlen=max(2, window))
    count, t0 = 0, time.monotonic()
    first = 0.0  # the rate counts from the first frame read: the time it takes to start reading is not the topic's
    next_print = t0 + 1.0
    try:
        while seconds <= 0 or time.monotonic() - t0 < seconds:
            for _ in reader.read(0.1):
                count += 1
                arrivals.append(time.monotonic())
                first = first or arrivals[-1]
            now = time.monotonic()
            if now < next_print:
                continue
            next_print = now + 1.0
            reader.sub.flush()
            published = count + reader.sub.skipped
            if count < 2:
                click.echo(f"no new frames on {topic!r} yet")
                continue
            gaps = [b - a for a, b in zip(list(arrivals), list(arrivals)[1:], strict=False)]
            click.echo(
                f"average rate: {(published - 1) / (now - first):.3f}\n"
                f"\tmin: {min(gaps):.4f}s max: {max(gaps):.4f}s std dev: {statistics.pstdev(gaps):.5f}s "
                f"window: {len(arrivals)}  (read {count}, skipped {reader.sub.skipped})"
            )
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _describe(data: Any) -> str:
    if isinstance(data, np.ndarray):
        if data.size == 0:
            return f"array {data.dtype} {tuple(data.shape)}"
        flat = data.astype(np.float64, copy=False)
        mean = float(flat.mean())
        return (f"array {data.dtype} {tuple(data.shape)}  min {float(flat.min()):g}  max {float(flat.max()):g}  "
                f"mean {mean:.4g}" if math.isfinite(mean) else f"array {data.dtype} {tuple(data.shape)}")  # fmt: skip
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        return f"bytes {len(raw)}: {raw[:32].hex()}{'...' if len(raw) > 32 else ''}"
    text = json.dumps(data, indent=2, default=str)
    return text if len(text) <= 16_384 else text[:16_384] + "\n... (truncated)"


@topic_group.command("echo")
@click.argument("app_file", type=_APP)
@click.argument("topic")
@click.option("--count", "-n", default=0, help="stop after N frames (0: no limit)")
@click.option("--seconds", default=0.0, help="stop after S seconds (0: until Ctrl-C or --count)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object a line (arrays described, not dumped)")
def topic_echo(app_file: str, topic: str, count: int, seconds: float, as_json: bool) -> None:
    """Print each frame of a topic as it comes: id, time, meta and data (JSON as it is, arrays summarised).

    Example: edgeflow topic echo main.py detector -n 5
    """
    reader = _TopicReader(load_app(app_file), topic)
    shown, t0 = 0, time.monotonic()
    try:
        while (not count or shown < count) and (seconds <= 0 or time.monotonic() - t0 < seconds):
            for frame in reader.read(0.2):
                age_ms = (time.time() - frame.timestamp) * 1000.0
                if as_json:
                    data = frame.data if not isinstance(frame.data, (np.ndarray, bytes, bytearray, memoryview)) else (
                        _describe(frame.data))  # fmt: skip
                    click.echo(json.dumps({"frame_id": frame.frame_id, "timestamp": frame.timestamp,
                                           "meta": frame.meta, "data": data}, default=str))  # fmt: skip
                else:
                    when = datetime.fromtimestamp(frame.timestamp).isoformat(timespec="milliseconds")
                    click.echo(f"frame_id: {frame.frame_id}  timestamp: {when}  age: {age_ms:.1f} ms")
                    if frame.meta:
                        click.echo(f"meta: {json.dumps(frame.meta, default=str)}")
                    click.echo(f"data: {_describe(frame.data)}\n---")
                shown += 1
                if count and shown >= count:
                    break
    except KeyboardInterrupt:
        pass
    except EdgeFlowError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        reader.close()
