"""The `edgeflow deploy` (the `kubernetes` deployer's command), `status`, `logs` and `delete` commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from edgeflow.errors import ConfigurationError

__all__ = ["COMMANDS", "delete_command", "deploy_command", "logs_command", "status_command"]

log = logging.getLogger("edgeflow.k8s")


def _log_to_stderr(verbose: bool) -> None:
    # stdout carries the manifests on --dry-run; everything else goes to stderr.
    logger = logging.getLogger("edgeflow")
    if not any(getattr(h, "_edgeflow_k8s", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._edgeflow_k8s = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _err(text: str) -> None:
    click.echo(text, err=True)


_cluster_options = [
    click.option("--kubeconfig", type=click.Path(dir_okay=False), help="kubeconfig file (default: $KUBECONFIG)"),
    click.option("--context", help="kubeconfig context (default: its current context)"),
]


def _with(options: list[Any]) -> Any:
    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _namespace(namespace: str | None, app_file: str | None) -> tuple[str, str | None]:
    """Return (namespace, app name) from --namespace and/or the app file (default ./main.py)."""
    from .names import k8s_name

    path = Path(app_file or "main.py")
    app_name = None
    if app_file or (namespace is None and path.is_file()):
        from edgeflow.loader import load_app

        app_name = load_app(path).name
    if namespace is None:
        if app_name is None:
            raise ConfigurationError("name the app's namespace with --namespace NS, or its file with --app main.py")
        namespace = k8s_name(app_name, "app")
    return namespace, app_name


def _selector(app_name: str | None) -> str:
    from .manifests import app_selector

    return app_selector(app_name) if app_name else "app.kubernetes.io/managed-by=edgeflow"


@click.command("deploy")
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--registry", help="registry to push the image to, e.g. registry.local:5000/team")
@click.option("--namespace", "-n", help="Kubernetes namespace (default: the app's name)")
@click.option("--image", help="deploy this image; skips the build")
@click.option("--builder", type=click.Choice(["docker", "podman", "buildah", "nerdctl"]), help="container builder")
@click.option("--platform", "platforms", multiple=True, help="target platform(s), e.g. linux/amd64,linux/arm64")
@click.option("--base-image", default="python:3.11-slim", show_default=True, help="the image's base")
@click.option("--insecure-registry", is_flag=True, help="push over plain HTTP / without TLS verification")
@click.option("--env-secret", default="edgeflow-env", show_default=True, help="Secret whose keys become env vars")
@click.option("--pull-secret", help="imagePullSecret for a private registry")
@click.option("--redis-url", help="run on this Redis or Redis Cluster (redis+cluster://h1:p1,...), no password in it")
@click.option("--redis-cluster", type=click.IntRange(3, 64), help="render a Redis Cluster of N masters with replicas")
@click.option("--redis-version", type=int, default=7, show_default=True, help="major version of the --redis-url Redis")
@click.option("--prometheus-url", help="a Prometheus scraping the pods: realtime inputs scale on their offered load")
@click.option("--dry-run", is_flag=True, help="print the manifests as YAML; build and apply nothing")
@click.option("--print-dockerfile", is_flag=True, help="print the generated Dockerfile and exit")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait for every rollout")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for the rollouts")
@click.option("--verbose", "-v", is_flag=True, help="debug logs")
@_with(_cluster_options)
def deploy_command(
    app_file: str,
    registry: str | None,
    namespace: str | None,
    image: str | None,
    builder: str | None,
    platforms: tuple[str, ...],
    base_image: str,
    insecure_registry: bool,
    env_secret: str,
    pull_secret: str | None,
    redis_url: str | None,
    redis_cluster: int | None,
    redis_version: int,
    prometheus_url: str | None,
    dry_run: bool,
    print_dockerfile: bool,
    wait: bool,
    timeout: float,
    verbose: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Build the app's image, push it, and run the app on Kubernetes (one Deployment per node).

    \b
    Examples:
      edgeflow deploy main.py --registry registry.local:5000 --namespace robot --dry-run
      edgeflow deploy main.py --registry registry.local:5000 --namespace robot
      edgeflow deploy main.py --image registry.local:5000/robot:v1 -n robot
    """
    from .appdeps import app_dependencies
    from .deployer import KubernetesDeployer, to_yaml
    from .image import BuildContext, detect_builder, dockerfile, edgeflow_distributions
    from .security import PASSWORD_KEY, redis_secret_name

    _log_to_stderr(verbose)
    path = Path(app_file)
    if print_dockerfile:
        dists = edgeflow_distributions()
        requirements = bool(app_dependencies(path.resolve().parent, [d.name for d in dists]).lines)
        click.echo(dockerfile(dists, base_image, requirements), nl=False)
        return
    plats = [p for arg in platforms for p in arg.split(",") if p]
    deployer = KubernetesDeployer()
    plan = deployer.plan(
        path, image=image, registry=registry, namespace=namespace, env_secret=env_secret, pull_secret=pull_secret,
        base_image=base_image,
        redis_url=redis_url, redis_cluster=redis_cluster or 0, redis_version=redis_version,
        prometheus_url=prometheus_url,
    )  # fmt: skip
    if dry_run:
        click.echo(to_yaml(plan.objects), nl=False)
        log.info("dry run: %d objects for app %r in namespace %s", len(plan.objects), plan.app.name, plan.namespace)
        secret = redis_secret_name(plan.app.name)
        log.info(
            "the pods read Redis's password from Secret %s, which `edgeflow deploy` creates; applying this YAML "
            "yourself, create it first: kubectl -n %s create secret generic %s "
            "--from-literal=%s=$(openssl rand -hex 24)",
            secret,
            plan.namespace,
            secret,
            PASSWORD_KEY,
        )
        return

    from .cluster import Cluster

    # Reach the cluster before a long build, so a bad kubeconfig fails in a second.
    cluster = Cluster.connect(kubeconfig, context)
    if image is None:
        found = detect_builder(builder, insecure_registry)
        ctx = BuildContext.prepare(plan.app_file.parent, base_image)
        try:
            # The content's tag, as the dry run printed it (plan() named it from the same content).
            pushed = plan.image
            log.info("building %s with %s; its output follows", pushed, found.name)
            found.build_and_push(ctx.path, pushed, plats, echo=lambda line: _err(f"  {found.name} | {line}"))
        finally:
            ctx.cleanup()
    from .errors import RolloutTimeoutError

    try:
        pruned = deployer.apply(cluster, plan, wait=wait, timeout=timeout, progress=_err)
    except RolloutTimeoutError as exc:
        _err("rollout failed:\n" + exc.summary)
        raise
    for name in pruned:
        _err(f"pruned {name}")
    _err(f"deployed {plan.app.name!r} ({plan.image}) to namespace {plan.namespace}")
    gateways = [o for o in plan.objects if o["kind"] == "Service" and o["spec"]["type"] == "NodePort"]
    for svc in gateways:
        port = svc["spec"]["ports"][0].get("nodePort")
        if port:
            _err(f"dashboard: http://<any node's address>:{port}/")


@click.command("status")
@click.option("--namespace", "-n", help="the app's namespace (default: from ./main.py)")
@click.option("--app", "app_file", type=click.Path(exists=True, dir_okay=False), help="the app's main.py")
@_with(_cluster_options)
def status_command(namespace: str | None, app_file: str | None, kubeconfig: str | None, context: str | None) -> None:
    """Show each deployed node: ready replicas, image, device and the dashboard's port.

    \b
    Examples:
      edgeflow status -n robot
      edgeflow status --app main.py --context edge-cluster
    """
    from .cluster import Cluster

    _log_to_stderr(False)
    ns, app_name = _namespace(namespace, app_file)
    cluster = Cluster.connect(kubeconfig, context)
    deployments = cluster.deployments(ns, _selector(app_name))
    if not deployments:
        raise ConfigurationError(f"nothing deployed by EdgeFlow in namespace {ns}; run `edgeflow deploy` first")
    click.echo(f"{'NODE':<22} {'READY':<7} {'DEVICE':<10} IMAGE")
    for d in deployments:
        labels = d.metadata.labels or {}
        node = labels.get("edgeflow.io/node") or d.metadata.name
        ready = f"{(d.status and d.status.ready_replicas) or 0}/{d.spec.replicas}"
        image = d.spec.template.spec.containers[0].image
        click.echo(f"{node:<22} {ready:<7} {labels.get('edgeflow.io/device', '-'):<10} {image}")
    for svc in cluster.services(ns, _selector(app_name)):
        for p in svc.spec.ports or []:
            if p.node_port:
                click.echo(f"service {svc.metadata.name}: NodePort {p.node_port} -> {p.port}")


@click.command("logs")
@click.argument("node")
@click.option("--follow", "-f", is_flag=True, help="keep streaming new lines")
@click.option("--tail", default=100, show_default=True, help="lines per pod to start with (-1: all)")
@click.option("--namespace", "-n", help="the app's namespace (default: from ./main.py)")
@click.option("--app", "app_file", type=click.Path(exists=True, dir_okay=False), help="the app's main.py")
@_with(_cluster_options)
def logs_command(
    node: str,
    follow: bool,
    tail: int,
    namespace: str | None,
    app_file: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Print the logs of every replica (pod) of NODE (its name in main.py).

    \b
    Examples:
      edgeflow logs detector -n robot --tail 50
      edgeflow logs detector --app main.py -f
    """
    from .cluster import Cluster

    _log_to_stderr(False)
    ns, _ = _namespace(namespace, app_file)
    cluster = Cluster.connect(kubeconfig, context)
    pods = [p.metadata.name for p in cluster.node_pods(ns, node)]
    if not pods:
        raise ConfigurationError(f"no pods of node {node!r} in namespace {ns}; `edgeflow status` lists the nodes")
    lines = None if tail < 0 else tail
    if follow:
        cluster.follow_all(ns, pods, lines, click.echo)
        return
    for pod in pods:
        for line in cluster.logs(ns, pod, lines).splitlines():
            click.echo(f"[{pod}] {line}" if len(pods) > 1 else line)


@click.command("delete")
@click.option("--namespace", "-n", help="the app's namespace (default: from ./main.py)")
@click.option("--app", "app_file", type=click.Path(exists=True, dir_okay=False), help="the app's main.py")
@click.option("--keep-namespace", is_flag=True, help="leave the namespace in place")
@click.option("--yes", "-y", is_flag=True, help="don't ask for confirmation")
@_with(_cluster_options)
def delete_command(
    namespace: str | None,
    app_file: str | None,
    keep_namespace: bool,
    yes: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Remove the deployed app: its Deployments, Services and (when EdgeFlow made it) its namespace.

    \b
    Examples:
      edgeflow delete --app main.py
      edgeflow delete -n robot --app main.py --keep-namespace --yes
    """
    from .cluster import Cluster

    _log_to_stderr(False)
    ns, app_name = _namespace(namespace, app_file)
    if app_name is None:
        raise ConfigurationError("`edgeflow delete` needs the app: pass --app main.py (or run it next to main.py)")
    if not yes:
        click.confirm(f"delete app {app_name!r} from namespace {ns}?", abort=True, err=True)
    cluster = Cluster.connect(kubeconfig, context)
    for name in cluster.delete_app(ns, app_name, keep_namespace):
        _err(f"deleted {name}")


#: What the plugin adds to `edgeflow`. `deploy`, `status` and `logs` are the core's, which find this plugin's deployer
#: by name and run its `command`, `status_command` and `logs_command` (for `status` and `logs`, when an option only
#: the cluster's commands know is given, such as --namespace).
COMMANDS = (delete_command,)
