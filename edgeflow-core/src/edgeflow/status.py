"""`edgeflow status` and `edgeflow logs`: a running app's nodes and their recent log lines, locally or deployed.

Locally they ask nothing of the nodes' processes: every replica reports once a second on the app's control plane
(`runtime/stats.py`: state, rates, counters, the last error, and its last log lines from `runtime/logring.py`),
and these commands listen there for a moment, wherever the replicas run.

A deployed app is a deployer's business: a deployer may give its own `status_command` and `logs_command` (click
commands; edgeflow-k8s does). Which one runs is decided from the command line: `--local` or `--target NAME` say
so; otherwise an option that only the deployer's command knows (for Kubernetes: --namespace/-n, --context,
--kubeconfig, --app) picks the deployer, and anything else is local.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import click

from .app import EdgeApp
from .errors import BrokerError, PluginError
from .loader import load_app
from .plugins import get_deployer, installed
from .runtime.logring import LOG_LINES
from .runtime.stats import MAX_REPORT_BYTES, STATS_CHANNEL, StatsAggregator

__all__ = ["logs_command", "status_command"]

_APP = click.Path(exists=True, dir_okay=False)
_HELP = ["-h", "--help"]
#: Replicas report once a second: two seconds hear every replica that is up at least once.
LISTEN_SECONDS = 2.0
#: Fields of a replica's record that `status --json` leaves out: histograms, traces and log lines.
_BULKY = ("log", "process_seconds", "latency_seconds", "traces", "links")


# Listening to the control plane --------------------------------------------------------------------------------
def listen(app: EdgeApp, seconds: float, each: Callable[[dict[str, Any]], None] | None = None) -> StatsAggregator:
    """Gather the app's statistics reports for `seconds` (forever when <= 0); `each` gets every valid report."""
    broker = app.broker
    broker.bind(app.name)
    broker.connect()
    agg = StatsAggregator(broker, app.describe())
    try:
        listener = broker.listen(STATS_CHANNEL)
        try:
            deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
            while (left := deadline - time.monotonic()) > 0:
                raw = listener.get(timeout=min(left, 0.5))
                if raw is None or len(raw) > MAX_REPORT_BYTES:
                    continue
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if isinstance(record, dict) and agg.ingest(record) and each is not None:
                    # The record as the aggregator kept it: bounded and cleaned (the control plane is not trusted).
                    each(max(agg.records(), key=lambda r: float(r["seen"])))
        finally:
            listener.close()
    finally:
        broker.close()
    return agg


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return f"{max(0.0, time.time() - ts):.0f}s ago"


def _num(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{float(v):.{digits}f}"


# The local commands ------------------------------------------------------------------------------------------
_DEPLOYED_HELP = """
\b
Deployed apps: with a deployer that has its own `{name}` (edgeflow-k8s), an option only it knows (Kubernetes:
--namespace/-n, --context, --kubeconfig, --app) asks the cluster instead; --target NAME picks the deployer and
--local forces this local view. `edgeflow {name} --target kubernetes --help` lists the cluster's options.
"""


@click.command("status")
@click.argument("app_file", type=_APP)
@click.option("--seconds", default=LISTEN_SECONDS, show_default=True, help="how long to listen for the reports")
@click.option("--json", "as_json", is_flag=True, help='print JSON: {"app", "broker", "nodes", "replicas"}')
def local_status(app_file: str, seconds: float, as_json: bool) -> None:
    """Show each node of a running app: status, replicas up, rates, counters and its last error.

    Every replica reports on the app's control plane (its Redis) once a second, wherever it runs; this listens
    there for --seconds. A node none of whose replicas reported is `unknown`, one that stopped reporting `gone`.
    Exits 1 when no node of the app reported.
    """
    app = load_app(app_file)
    agg = listen(app, max(0.5, seconds))
    nodes, records = agg.nodes(), agg.records()
    if as_json:
        replicas = [{k: v for k, v in r.items() if k not in _BULKY} for r in records]
        click.echo(json.dumps({"app": app.name, "broker": app.broker.display_url, "nodes": nodes,
                               "replicas": replicas}, indent=2, default=str))  # fmt: skip
    else:
        up = sum(1 for n in nodes if n["status"] == "up")
        click.echo(f"app {app.name}  broker {app.broker.display_url}  {up} of {len(nodes)} nodes up")
        width = max([len(n["name"]) for n in nodes] + [4]) + 2
        click.echo(f"{'NODE':<{width}}{'TYPE':<10}{'STATUS':<11}{'REPLICAS':<10}{'IN/S':>8}{'OUT/S':>8}"
                   f"{'DROPPED':>9}{'FAILED':>8}{'P50 MS':>8}  LAST ERROR")  # fmt: skip
        for n in nodes:
            err = n.get("last_error") or {}
            last = f"{_ago(err.get('ts'))}: {err.get('message', '')}" if err else "-"
            click.echo(f"{n['name']:<{width}}{n['type']:<10}{n['status']:<11}"
                       f"{str(n['replicas_alive']) + '/' + str(n['replicas']):<10}{_num(n['fps_in']):>8}"
                       f"{_num(n['fps_out']):>8}{n['dropped']:>9}{n['failed']:>8}{_num(n['proc_ms_p50'], 2):>8}"
                       f"  {last[:100]}")  # fmt: skip
            for r in sorted((r for r in records if r.get("node") == n["name"]), key=lambda r: str(r.get("instance"))):
                where = str(r.get("instance", "")).partition("@")[2]
                state = r.get("state", "?") if r.get("alive") else f"gone ({_ago(r.get('seen'))})"
                click.echo(f"{'':<{width}}  replica {r.get('replica', '?')} on {where}: {state}, "
                           f"in {_num(r.get('fps_in'))}/s, out {_num(r.get('fps_out'))}/s")  # fmt: skip
    if not records:
        raise click.ClickException(
            f"no node of app {app.name!r} reported on {app.broker.display_url} within {seconds:g}s: is it running, "
            "with this Redis (REDIS_URL)? Start it with `python main.py`"
        )


def _line(node: str, record: dict[str, Any], line: dict[str, Any], several: bool) -> str:
    when = datetime.fromtimestamp(float(line.get("ts") or 0)).isoformat(sep=" ", timespec="milliseconds")
    who = f" [{node}.{record.get('replica')} {str(record.get('instance', '')).partition('@')[2]}]" if several else ""
    return f"{when} {line.get('level', '')!s:<7}{who} {line.get('msg', '')}"


class _Printer:
    """Prints the log lines of one node's replicas once each, in time order, and says when lines went past."""

    def __init__(self, node: str, several: bool) -> None:
        self.node = node
        self.several = several
        self.shown: dict[str, int] = {}

    def new_lines(self, records: Iterable[dict[str, Any]]) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = []
        for r in records:
            if r.get("node") != self.node or not isinstance(r.get("log"), list):
                continue
            instance = str(r.get("instance"))
            lines = [x for x in r["log"] if isinstance(x, dict) and isinstance(x.get("seq"), int)]
            last = self.shown.get(instance)
            fresh = [x for x in lines if last is None or x["seq"] > last]
            if last is not None and fresh and fresh[0]["seq"] > last + 1:
                skipped = fresh[0]["seq"] - last - 1
                out.append((float(fresh[0].get("ts") or 0) - 1e-6,
                            f"... {skipped} line(s) of {instance} went past between two reports (each keeps "
                            f"{LOG_LINES}); its own console has them all"))  # fmt: skip
            for x in fresh:
                out.append((float(x.get("ts") or 0), _line(self.node, r, x, self.several)))
            if lines:
                self.shown[instance] = max(self.shown.get(instance, 0), lines[-1]["seq"])
        return sorted(out)


@click.command("logs")
@click.argument("app_file", type=_APP)
@click.argument("node")
@click.option(
    "--tail", default=LOG_LINES, show_default=True, help=f"lines to show first (each replica keeps {LOG_LINES})"
)
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until Ctrl-C")
@click.option("--seconds", default=LISTEN_SECONDS, show_default=True, help="how long to listen for the replicas")
def local_logs(app_file: str, node: str, tail: int, follow: bool, seconds: float) -> None:
    """Print the recent log lines of every replica of NODE of a running app, oldest first.

    Each replica publishes its last lines (INFO and above, each cut at 240 characters) in its statistics report
    once a second; this listens for them on the app's control plane, wherever the replicas run. The full log is
    each process's own console.
    """
    app = load_app(app_file)
    if node not in app.nodes:
        raise click.BadParameter(f"no node {node!r} in app {app.name!r}; its nodes: {', '.join(app.nodes)}",
                                 param_hint="NODE")  # fmt: skip
    printer = _Printer(node, app.nodes[node].replicas > 1)
    agg = listen(app, max(0.5, seconds))
    mine = [r for r in agg.records() if r.get("node") == node]
    if not mine:
        raise click.ClickException(
            f"no replica of {node!r} reported on {app.broker.display_url} within {seconds:g}s: is it running? "
            f"(`edgeflow status {app_file}` shows what does)"
        )
    first = printer.new_lines(mine)
    for _, text in first[max(0, len(first) - tail) :] if tail >= 0 else first:
        click.echo(text)
    if not first and not follow:
        click.echo(f"(no log lines from {node} yet: its replicas logged nothing at INFO or above)", err=True)
    if not follow:
        return

    def each(record: dict[str, Any]) -> None:
        for _, text in printer.new_lines([record]):
            click.echo(text)

    try:
        listen(app, 0, each)
    except KeyboardInterrupt:
        pass
    except BrokerError as exc:
        raise click.ClickException(f"lost the control plane while following: {exc}") from exc


# The commands `edgeflow status` and `edgeflow logs` --------------------------------------------------------------
def _default_target() -> str:
    found = installed("deployer")
    return next(iter(found)) if len(found) == 1 else "kubernetes"


def _option_names(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}


def _names_any(args: list[str], options: set[str]) -> bool:
    for arg in args:
        if arg == "--":
            return False
        if arg in options or arg.partition("=")[0] in options or (arg[:1] == "-" and arg[1:2] != "-" and arg[:2] in
                                                                   options):  # fmt: skip
            return True
    return False


def _dispatch(kind: str, local: click.Command, args: list[str]) -> None:
    """Run the local command or the deployer's for `edgeflow status|logs ARGS`, as the module docstring says."""
    target: str | None = None
    mode = "auto"
    rest: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--local":
            mode = "local"
        elif arg == "--target" or arg.startswith("--target="):
            target = arg.partition("=")[2] or next(it, "")
            mode = "deployed"
        else:
            rest.append(arg)
    if mode == "auto":
        found = installed("deployer").get(target or _default_target())
        remote = getattr(found, f"{kind}_command", None)
        deployed = remote is not None and _names_any(rest, _option_names(remote) - _option_names(local))
        mode = "deployed" if deployed else "local"
    if mode == "local":
        local.main(args=rest, prog_name=f"edgeflow {kind}", standalone_mode=False, help_option_names=_HELP)
        return
    name = target or _default_target()
    command = getattr(get_deployer(name), f"{kind}_command", None)
    if command is None:
        raise PluginError(f"the deployer {name!r} has no `edgeflow {kind}`; use --local for the local view", name=name)
    command.main(
        args=rest, prog_name=f"edgeflow {kind} --target {name}", standalone_mode=False, help_option_names=_HELP
    )


def _dispatcher(kind: str, local: click.Command, example: str) -> click.Command:
    def run(args: tuple[str, ...]) -> None:
        _dispatch(kind, local, list(args))

    local.help = (
        inspect.cleandoc(local.help or "") + "\n" + _DEPLOYED_HELP.format(name=kind) + f"\n\b\nExamples:\n{example}"
    )
    return click.Command(
        kind,
        callback=run,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        help=local.help,
        short_help=(local.help or "").split("\n")[0].rstrip("."),
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
        add_help_option=False,
    )


status_command = _dispatcher(
    "status",
    local_status,
    "  edgeflow status main.py                 # the local run, from its control plane\n"
    "  edgeflow status main.py --json\n"
    "  edgeflow status -n robot                # deployed to Kubernetes (edgeflow-k8s)",
)
logs_command = _dispatcher(
    "logs",
    local_logs,
    "  edgeflow logs main.py detector          # its replicas' last lines\n"
    "  edgeflow logs main.py detector -f\n"
    "  edgeflow logs detector -n robot --tail 50   # the pods' logs on Kubernetes (edgeflow-k8s)",
)
