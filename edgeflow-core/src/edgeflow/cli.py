"""The `edgeflow` command; plugins add their commands through the `register_commands` hook."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any

import click

from .errors import EdgeFlowError, PluginError
from .loader import load_app
from .observe import render_graph, topic_group, trace_command
from .plugins import get_deployer, get_plugin_manager, installed, plugin_info
from .recording import record_command, replay_command
from .scaffold import init_command
from .status import logs_command, status_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(metadata.version("edgeflow-core"), prog_name="edgeflow")
def cli() -> None:
    """EdgeFlow: distributed data-processing pipelines on Redis.

    \b
    Examples:
      edgeflow init robot            # a new project
      edgeflow status main.py        # a running app's nodes
      edgeflow <command> --help      # each command's options, with an example
    """


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def plugins_command(as_json: bool) -> None:
    """List the installed plugins: versions, what each provides by kind, and their hooks.

    Example: edgeflow plugins --json
    """
    info = plugin_info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for p in info:
        click.echo(f"{p['name']:<28} {p['distribution']} {p['version']}")
        for kind, names in sorted(p["provides"].items()):
            click.echo(f"    {kind:<10} {', '.join(names)}")
        click.echo(f"    hooks      {', '.join(p['hooks'])}")


@cli.command("graph")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "mermaid", "dot"]), default="json", show_default=True,
              help="JSON, a Mermaid flowchart (Markdown, GitHub) or Graphviz dot (dot -Tsvg)")  # fmt: skip
def graph_command(app_file: str, fmt: str) -> None:
    """Print an app's nodes and links as JSON, Mermaid or Graphviz dot, without running it.

    Example: edgeflow graph main.py --format mermaid
    """
    click.echo(render_graph(load_app(app_file).describe(), fmt))


cli.add_command(trace_command)
cli.add_command(topic_group)


@cli.command("dead-letters")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("node")
@click.option("--replay", is_flag=True, help="give the dead letters back to the node once more")
@click.option("--id", "ids", multiple=True, help="only these dead-letter ids (repeatable)")
@click.option("--count", default=100, show_default=True, help="how many to list")
def dead_letters_command(app_file: str, node: str, replay: bool, ids: tuple[str, ...], count: int) -> None:
    """List the frames that kept failing on NODE's durable links, or replay them.

    Example: edgeflow dead-letters main.py detector --replay
    """
    app = load_app(app_file)
    if node not in app.nodes:
        raise click.BadParameter(f"no node {node!r}; known nodes: {', '.join(sorted(app.nodes))}", param_hint="NODE")
    broker = app.broker
    broker.bind(app.name)
    broker.connect()
    try:
        if replay:
            n = broker.replay_dead_letters(node, list(ids) or None)
            click.echo(f"replayed {n} dead letter(s) to {node}; they are processed when {node} runs")
            return
        letters = broker.dead_letters(node, count)
        if not letters:
            click.echo(f"no dead letters for {node}")
        for x in letters:
            if ids and x["id"] not in ids:
                continue
            click.echo(f"{x['id']}  from {x['source']}  frame {x['frame_id']}  attempts {x['attempts']}  {x['error']}")
    finally:
        broker.close()


cli.add_command(record_command)
cli.add_command(replay_command)
cli.add_command(init_command)
cli.add_command(status_command)
cli.add_command(logs_command)


def _default_target() -> str:
    found = installed("deployer")
    if len(found) == 1:
        return next(iter(found))
    return "kubernetes"


@cli.command(
    "deploy",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.option("--target", metavar="NAME", help="the deployer to use (default: the only one installed, or kubernetes)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def deploy_command(target: str | None, args: tuple[str, ...]) -> None:
    """Deploy an app with a deployer found by name; its options follow (`edgeflow deploy --help` lists them).

    Example: edgeflow deploy main.py --registry registry.local:5000/team --namespace robot
    """
    name = target or _default_target()
    try:
        deployer: Any = get_deployer(name)
    except PluginError:
        if args in (("--help",), ("-h",)):
            click.echo(deploy_command.get_help(click.get_current_context()))
            click.echo(f"\ninstalled deployers: {', '.join(sorted(installed('deployer'))) or 'none'}")
            return
        raise
    command: click.Command = deployer.command
    command.main(
        args=list(args),
        prog_name=f"edgeflow deploy --target {name}",
        standalone_mode=False,
        help_option_names=["-h", "--help"],
    )


def main(argv: list[str] | None = None) -> None:
    """Run the `edgeflow` command line."""
    try:
        get_plugin_manager().hook.register_commands(cli=cli)
        cli.main(args=argv, prog_name="edgeflow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgeFlowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
