"""`edgeflow record` and `edgeflow replay`: keep what flows through a running app, and play it back into it.

Recording adds a sink node to the loaded app (the one whose kind the output names: `run.mcap`, `run.db`,
`run/`) and runs only that node, reading the app's topics as a consumer group of its own: durably where the
app's producers write durable streams, so that no frame is missed. Replaying publishes a recording's frames as
the source nodes that made them, through the app's broker and the links out of those nodes (codecs and
gateways included), at the recorded pace: original frame ids and meta, timestamps shifted to now (the original
kept as meta `recorded_ts`), arrays bit for bit.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import click

from .app import EdgeApp
from .errors import ConfigurationError
from .frame import Frame
from .links import Link
from .loader import load_app
from .runtime.outage import Outage
from .runtime.outputs import Outputs
from .runtime.runner import run_app
from .runtime.stats import NodeStats, StatsReporter
from .runtime.workers import ErrorLog, RunContext
from .sinks import sink_for

__all__ = ["parse_duration", "record", "record_command", "replay", "replay_command"]

log = logging.getLogger("edgeflow.recording")
_SENDERS = ("producer", "consumer", "fusion")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in "30s", "500ms", "5m", "2h", "1d" or a plain number of seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?\s*", str(text))
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration; write 30s, 500ms, 5m or 2h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _sources(app: EdgeApp, topics: Sequence[str] | None, available: Sequence[str] | None = None) -> list[str]:
    """The sending nodes `topics` names (node names or topics), or every one (of `available`, if given)."""
    if topics:
        chosen = [t if t in app.nodes else app.resolve_source(t) for t in topics]
    else:
        chosen = [n for n, spec in app.nodes.items() if spec.type in _SENDERS]
        if available is not None:
            chosen = [n for n in available if n in chosen] + [n for n in available if n not in app.nodes]
    bad = [n for n in chosen if n not in app.nodes or app.nodes[n].type not in _SENDERS]
    if bad:
        known = ", ".join(n for n, s in app.nodes.items() if s.type in _SENDERS) or "none"
        raise ConfigurationError(
            f"{', '.join(map(repr, bad))}: no producer, consumer or fusion node of that name in app {app.name!r} "
            f"(its sending nodes: {known}); pick others with --topics"
        )
    return list(dict.fromkeys(chosen))


# Record -----------------------------------------------------------------------------------------------------
def _reading_link(app: EdgeApp, source: str) -> dict[str, Any]:
    """How the recorder reads `source`: the raw durable stream if the app writes one, else the raw realtime one."""
    links = [ln for ln in app.links_from(source) if ln.transport == "redis"]
    if any(ln.qos == "durable" and not ln.variant for ln in links):
        return {"qos": "durable"}
    if not links or any(ln.qos == "realtime" and not ln.variant for ln in links):
        return {"qos": "realtime"}
    first = links[0]  # every link of this source asks for a codec: read its encoding
    return {"qos": first.qos, "codec": first.codec, **first.options}


def record(
    app: EdgeApp,
    out: str,
    *,
    topics: Sequence[str] | None = None,
    seconds: float | None = None,
    name: str = "recorder",
    stop: threading.Event | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record `app`'s topics into `out` (a sink picked by its kind) until `seconds` pass, `stop` or a signal."""
    sink_name, cls = sink_for(out)
    if name in app.nodes:
        raise ConfigurationError(f"app {app.name!r} has a node named {name!r}; record as another (--name)")
    sources = _sources(app, topics)
    if not sources:
        raise ConfigurationError(f"app {app.name!r} has no producer, consumer or fusion node to record")
    recorder = type("Recorder", (cls,), {"__module__": __name__, "__doc__": f"Records into {out} ({sink_name})."})
    app.node(name=name, type="sink", path=out, **(options or {}))(recorder)
    for source in sources:
        app.link(source).to(name, **_reading_link(app, source))
    links = app.links_into(name)
    for ln in links:
        log.info("recording %s (%s%s) into %s with the %s sink", ln.source, ln.qos,
                 f", {ln.variant}" if ln.variant else "", out, sink_name)  # fmt: skip
    stop = stop or threading.Event()
    timer = threading.Timer(seconds, stop.set) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        summary = run_app(app, [name], embedded=False, stop=stop)
    finally:
        if timer is not None:
            timer.cancel()
        broker = app.broker
        try:
            broker.connect()
            broker.remove_reader(links)  # a gone recorder must not hold the producers' durable streams back
        finally:
            broker.close()
    return summary.get(name, {})


# Replay -----------------------------------------------------------------------------------------------------
def replay(
    app: EdgeApp,
    recording: str,
    *,
    speed: float = 1.0,
    loop: bool = False,
    topics: Sequence[str] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Publish `recording`'s frames into `app` as the nodes that made them; return how many were sent."""
    if speed < 0:
        raise ConfigurationError(f"--speed must be >= 0 (0: as fast as the app takes them), got {speed}")
    _, cls = sink_for(recording)
    rec = cls.open_recording(recording)
    stop = stop or threading.Event()
    try:
        sources = _sources(app, topics, rec.sources())
        broker = app.broker
        broker.bind(app.name)
        broker.connect()
        ctx = RunContext(app, broker, stop, StatsReporter(broker))
        outputs: dict[str, Outputs] = {}
        try:
            for source in sources:
                spec = app.nodes[source]
                logger = logging.getLogger(f"edgeflow.replay.{source}")
                out = Outputs(ctx, spec, NodeStats(source, spec.type), logger, ErrorLog(logger), Outage(logger, stop))
                out.open()
                outputs[source] = out
            sent = 0
            while not stop.is_set():
                sent += _play(rec.frames(set(sources)), outputs, speed, stop)
                if not loop:
                    break
        finally:
            for out in outputs.values():
                out.close()
            broker.close()
    finally:
        rec.close()
    return sent


def _play(frames: Any, outputs: dict[str, Outputs], speed: float, stop: threading.Event) -> int:
    """One pass over the recording, paced by the frames' own timestamps."""
    sent = 0
    first: float | None = None
    wall0, mono0 = time.time(), time.monotonic()
    for source, frame in frames:
        if stop.is_set():
            break
        if first is None:
            first = frame.timestamp
        if speed:
            offset = (frame.timestamp - first) / speed
            delay = mono0 + offset - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            stamp = wall0 + offset
        else:
            stamp = time.time()
        meta = dict(frame.meta)
        meta.setdefault("recorded_ts", frame.timestamp)
        if outputs[source].emit(Frame(frame.frame_id, stamp, meta, frame.data)):
            sent += 1
    return sent


# The commands -----------------------------------------------------------------------------------------------
def _split(value: str | None) -> list[str] | None:
    return [t.strip() for t in value.split(",") if t.strip()] if value else None


@click.command("record")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out", required=True, help="run.mcap, run.db or a folder run/: picks the sink")
@click.option("--topics", help="comma-separated nodes or topics to record (default: all)")
@click.option("--seconds", type=float, help="stop after this many seconds (default: on Ctrl-C)")
@click.option("--name", default="recorder", show_default=True, help="the recorder's node (its consumer group)")
def record_command(app_file: str, out: str, topics: str | None, seconds: float | None, name: str) -> None:
    """Record a running app's topics into a file, as `ros2 bag record` does.

    Example: edgeflow record main.py -o run.mcap --topics camera,detector --seconds 60
    """
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("edgeflow").setLevel(logging.INFO)
    summary = record(load_app(app_file), out, topics=_split(topics), seconds=seconds, name=name)
    click.echo(f"recorded {summary.get('frames_in', 0)} frame(s) into {out} (dropped {summary.get('dropped', 0)}, "
               f"failed {summary.get('failed', 0)})")  # fmt: skip


@click.command("replay")
@click.argument("first")
@click.argument("second")
@click.option("--speed", type=float, default=1.0, show_default=True, help="times the recorded pace; 0: unpaced")
@click.option("--loop", is_flag=True, help="start over at the end, until Ctrl-C")
@click.option("--topics", help="comma-separated sources to replay (default: all recorded)")
@click.option(
    "--from-broker", is_flag=True, help="replay what a durable link's stream holds: FIRST=APP_FILE SECOND=SOURCE"
)
@click.option("--since", default="30s", show_default=True, help="--from-broker: how far back (30s, 5m, 2h)")
@click.option("--to", "targets", help="--from-broker: only these targets (comma-separated)")
def replay_command(
    first: str, second: str, speed: float, loop: bool, topics: str | None, from_broker: bool, since: str,
    targets: str | None,
) -> None:  # fmt: skip
    """Replay RECORDING into the running APP_FILE as the nodes that recorded it (FIRST=RECORDING SECOND=APP_FILE).

    With --from-broker, FIRST is APP_FILE and SECOND a SOURCE node: the frames its durable links' streams still
    hold from --since ago go to their targets once more (keep them longer with the link's retain_seconds).

    \b
    Examples:
      edgeflow replay run.mcap main.py --speed 2 --topics camera
      edgeflow replay --from-broker main.py camera --since 30s
    """
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("edgeflow").setLevel(logging.INFO)
    if from_broker:
        app = load_app(first)
        source = app.resolve_source(second)
        wanted = _split(targets)
        links: list[Link] = [ln for ln in app.links_from(source) if ln.qos == "durable"
                             and (wanted is None or ln.target in wanted)]  # fmt: skip
        if not links:
            raise click.BadParameter(f"{source!r} has no durable links{' to ' + targets if targets else ''}; only "
                                     "durable streams keep frames", param_hint="SOURCE")  # fmt: skip
        broker = app.broker
        broker.bind(app.name)
        broker.connect()
        try:
            counts = broker.replay_from(links, parse_duration(since))
        finally:
            broker.close()
        for target, n in counts.items():
            click.echo(f"replayed {n} frame(s) of {source} from the last {since} to {target}")
        return
    stop = threading.Event()
    try:
        sent = replay(load_app(second), first, speed=speed, loop=loop, topics=_split(topics), stop=stop)
    except KeyboardInterrupt:
        stop.set()
        raise click.exceptions.Exit(130) from None
    click.echo(f"replayed {sent} frame(s) from {first}")
