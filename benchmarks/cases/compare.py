"""Ratios you can trust: EdgeFlow against the peers (dora-rs, zenoh) and the raw ceilings in interleaved rounds.

The machine drifts by up to 2x between runs, so a ratio of two numbers measured minutes apart says little. Here
every contender of a workload runs once per round, in an order rotated each round (EdgeFlow, peer, EdgeFlow, peer,
...), and each ratio is taken within a round, then reported as the median over the rounds with its spread (the
lowest and highest round). All of it twice: on the machine as it is ("quiet"), and under a competing CPU load of
one busy process per core, started here ("loaded").

The targets of issue 17 are checked on these medians; each ratio row's note says `target ... met|MISSED`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .._harness import FRAME_BYTES, MSG_BYTES, Settings, row
from . import ceilings, edgeflow_link, peers
from .ceilings import workload_name

MODES = ["quiet", "loaded"]


@dataclass(frozen=True)
class Contender:
    """One system measured at one workload: `run(cfg, server)` returns its result rows."""

    name: str
    run: Callable[[Settings, Any], list[dict[str, Any]]]


def _edgeflow(broker: str, size: int, rate: float | None, qos: str, layout: str) -> Contender:
    def run(cfg: Settings, server: Any) -> list[dict[str, Any]]:
        pid = server.proc.pid if server.proc else None
        try:
            return edgeflow_link.measure(server.url, pid, broker, size, rate, qos, layout, cfg)
        finally:
            edgeflow_link.server_client_flush(server.url)

    return Contender(f"edgeflow {broker} {qos} {layout}", run)


def _ceiling(system: str, size: int, rate: float | None) -> Contender:
    return Contender(f"ceiling {system}", lambda cfg, server: ceilings.measure(system, size, rate, cfg, server))


def _dora(size: int, rate: float | None) -> Contender:
    return Contender("peer dora-rs", lambda cfg, server: peers.measure_dora(size, rate, cfg))


def _zenoh(size: int, rate: float | None) -> Contender:
    return Contender("peer zenoh", lambda cfg, server: peers.measure_zenoh(size, rate, cfg))


@dataclass(frozen=True)
class Target:
    """A ratio or a figure the issue asks for, checked on the median."""

    system: str
    metric: str  # "rate", "p50_ms" or "ratio"
    bound: float
    versus: str = ""  # for a ratio: the system it is compared to
    modes: tuple[str, ...] = ("quiet", "loaded")
    at_most: bool = False


@dataclass(frozen=True)
class Workload:
    """The contenders measured at one payload size and rate, the ratios reported and the targets checked."""

    size: int
    rate: float | None
    contenders: list[Contender]
    ratios: list[tuple[str, str]]
    targets: list[Target]
    #: Further metrics of the contenders' rows reported as medians over the rounds (e.g. CPU per frame).
    medians: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The case name, shared with the other modules' rows at this workload."""
        return workload_name(self.size, self.rate)


def workloads(quick: bool) -> list[Workload]:
    """What is compared: the 921,600-byte frame unthrottled and at 30/s, and 100-byte messages unthrottled."""
    shm = "shm" in edgeflow_link.brokers()
    planes = ["redis", "shm"] if shm else ["redis"]
    f, m = FRAME_BYTES, MSG_BYTES
    peers_of_frame = ["peer dora-rs", "peer zenoh", "ceiling redis-py"]
    ours = [_edgeflow(b, f, None, "realtime", lay) for b in planes for lay in ("1proc", "per-node")]
    frame_targets = [Target(f"edgeflow {b} realtime 1proc", "ratio", 1.0, "peer dora-rs") for b in planes]
    frame_targets += [Target(f"edgeflow {b} realtime 1proc", "ratio", 10.0, "ceiling redis-py") for b in planes]
    if shm:
        frame_targets.append(Target("edgeflow shm realtime per-node", "ratio", 1.5, "peer dora-rs", ("quiet",)))
        frame_targets.append(Target("edgeflow shm realtime per-node", "ratio", 1.0, "peer dora-rs", ("loaded",)))
    frame = Workload(
        f,
        None,
        [*ours, _ceiling("redis-py", f, None), _dora(f, None), _zenoh(f, None)],
        [(c.name, peer) for c in ours for peer in peers_of_frame],
        frame_targets,
    )
    paced = Workload(
        f,
        30,
        [*[_edgeflow(b, f, 30, "realtime", "1proc") for b in planes], _dora(f, 30)],
        [],
        [Target(f"edgeflow {b} realtime 1proc", "p50_ms", 0.1, at_most=True) for b in planes],
    )
    small_ours = [_edgeflow(b, m, None, "durable", "per-node") for b in planes]
    if shm:
        small_ours.append(_edgeflow("shm", m, None, "realtime", "per-node"))  # through the same-host channel
    small = Workload(
        m,
        None,
        [*small_ours, _dora(m, None)],
        [(c.name, "peer dora-rs") for c in small_ours],
        [Target(c.name, "rate", 50_000) for c in small_ours],
    )
    if quick:
        # One of each kind of contender, one round: the smoke test runs every code path, not the numbers.
        first = ours[0]
        return [Workload(f, None, [first, _ceiling("redis-py", f, None), _dora(f, None)],
                         [(first.name, "peer dora-rs")], [])]  # fmt: skip
    return [frame, paced, small]


@contextlib.contextmanager
def competing_load(mode: str) -> Iterator[None]:
    """In "loaded" mode, one busy Python process per core for the duration (killed after)."""
    procs: list[subprocess.Popen[bytes]] = []
    if mode == "loaded":
        for _ in range(os.cpu_count() or 1):
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5)  # the scheduler has them running before the first measurement
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _value(rows: list[dict[str, Any]], metric: str) -> float:
    return next((float(r["value"]) for r in rows if r["metric"] == metric), float("nan"))


def _spread(values: list[float]) -> str:
    good = [v for v in values if v == v]
    return f"{min(good):.3g}..{max(good):.3g}" if good else "-"


def _median(values: list[float]) -> float:
    good = [v for v in values if v == v]
    return statistics.median(good) if good else float("nan")


def run(quick: bool) -> list[dict[str, Any]]:
    """Every workload's contenders in interleaved rounds, quiet and loaded; medians, ratios and their spread."""
    from edgeflow.embedded import EmbeddedRedis

    cfg = Settings.make(quick)
    rounds = 1 if quick else int(os.environ.get("EFBENCH_ROUNDS", "3"))
    out: list[dict[str, Any]] = []
    server = EmbeddedRedis().start()
    try:
        for mode in MODES:
            for wl in workloads(quick):
                out += _compare(wl, mode, rounds, cfg, server)
    finally:
        server.stop()
    return out


def _compare(wl: Workload, mode: str, rounds: int, cfg: Settings, server: Any) -> list[dict[str, Any]]:
    results: dict[str, list[list[dict[str, Any]]]] = {c.name: [] for c in wl.contenders}
    with competing_load(mode):
        for r in range(rounds):
            k = r % len(wl.contenders)
            for c in wl.contenders[k:] + wl.contenders[:k]:  # rotated: no contender always runs first
                print(f"   {mode} round {r + 1}/{rounds}: {c.name}", flush=True)
                results[c.name].append(c.run(cfg, server))
    case = f"{wl.name} [{mode}]"
    out: list[dict[str, Any]] = []
    rates: dict[str, list[float]] = {}
    for name, runs in results.items():
        problems = [x for rows in runs for x in rows if x["metric"] in ("error", "available")]
        if problems:
            out.append(problems[0] | {"case": case})
            rates[name] = [float("nan")] * len(runs)
            continue
        rates[name] = [_value(rows, "rate") for rows in runs]
        p50 = [_value(rows, "p50_ms") for rows in runs]
        note = f"median of {len(runs)} interleaved rounds; runs {[round(x) for x in rates[name]]}"
        out.append(row(case, name, "rate", _median(rates[name]), "msg/s", note))
        out.append(row(case, name, "p50_ms", _median(p50), "ms", f"runs {[round(x, 3) for x in p50]}"))
        out.append(row(case, name, "p99_ms", _median([_value(rows, "p99_ms") for rows in runs]), "ms"))
        for metric in wl.medians:
            values = [_value(rows, metric) for rows in runs]
            unit = next((x["unit"] for x in runs[0] if x["metric"] == metric), "")
            out.append(row(case, name, metric, _median(values), unit, f"runs {[round(x, 1) for x in values]}"))
    for name, versus in wl.ratios:
        if name not in rates or versus not in rates:
            continue
        per_round = [a / b if b else float("nan") for a, b in zip(rates[name], rates[versus], strict=True)]
        ratio = _median(per_round)
        note = f"median of {len(per_round)} rounds, spread {_spread(per_round)}"
        for t in wl.targets:
            if t.metric == "ratio" and t.system == name and t.versus == versus and mode in t.modes:
                note += f"; target >= {t.bound:g}x {'met' if ratio >= t.bound else 'MISSED'}"
        out.append(row(case, f"{name} / {versus}", "ratio", ratio, "x", note))
    for t in wl.targets:
        if t.metric == "ratio" or mode not in t.modes:
            continue
        got = next((x["value"] for x in out if x["broker"] == t.system and x["metric"] == t.metric), float("nan"))
        ok = got <= t.bound if t.at_most else got >= t.bound
        sign = "<=" if t.at_most else ">="
        out.append(row(case, t.system, f"target_{t.metric}", got, "", f"target {sign} {t.bound:g} "
                       f"{'met' if ok else 'MISSED'}"))  # fmt: skip
    return out
