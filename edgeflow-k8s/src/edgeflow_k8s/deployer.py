"""`KubernetesDeployer`: load an app, build its image, render its manifests and apply them."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from secrets import token_hex
from typing import TYPE_CHECKING, Any

from edgeflow.errors import ConfigurationError

from .manifests import RenderOptions, render
from .names import k8s_name
from .security import PASSWORD_KEY, redis_secret_name

if TYPE_CHECKING:
    from edgeflow.app import EdgeApp

    from .cluster import Cluster

__all__ = ["DeployPlan", "KubernetesDeployer", "to_yaml"]

log = logging.getLogger("edgeflow.k8s")
# Values that must never reach a manifest or a log; the pods read them from a Secret instead.
SECRET_ENV = ("EDGEFLOW_TOKEN", "REDIS_URL", "DATA_REDIS_URL", "REDIS_PASSWORD")


def to_yaml(objects: Sequence[dict[str, Any]]) -> str:
    """Return `objects` as one multi-document YAML text."""
    import yaml

    return yaml.safe_dump_all(list(objects), sort_keys=False, explicit_start=True, default_flow_style=False)


@dataclass
class DeployPlan:
    """What one `edgeflow deploy` does: the app, where it goes, and its rendered objects."""

    app: EdgeApp
    app_file: Path
    namespace: str
    image: str
    objects: list[dict[str, Any]] = field(default_factory=list)
    #: What it was rendered with (with_image renders again with the same).
    options: RenderOptions | None = None

    @property
    def deployments(self) -> list[str]:
        """Names of the Deployments, in apply order."""
        return [o["metadata"]["name"] for o in self.objects if o["kind"] == "Deployment"]


class KubernetesDeployer:
    """Deploys an EdgeFlow app to a Kubernetes cluster (registered as the `kubernetes` deployer)."""

    name = "kubernetes"
    help = "build the app's image, render its manifests and apply them to a Kubernetes cluster"

    @property
    def command(self) -> Any:
        """The click command that `edgeflow deploy` runs for this deployer."""
        from .commands import deploy_command

        return deploy_command

    @property
    def status_command(self) -> Any:
        """The click command behind `edgeflow status` for a deployed app (`-n NAMESPACE`, `--app`, ...)."""
        from .commands import status_command

        return status_command

    @property
    def logs_command(self) -> Any:
        """The click command behind `edgeflow logs NODE` for a deployed app."""
        from .commands import logs_command

        return logs_command

    def plan(
        self,
        app_file: str | Path,
        *,
        image: str | None = None,
        registry: str | None = None,
        namespace: str | None = None,
        env_secret: str | None = "edgeflow-env",
        pull_secret: str | None = None,
        base_image: str | None = None,
        **scale: Any,
    ) -> DeployPlan:
        """Load the app and render its objects; without `image`, name the one a build would push to `registry`.

        That image's tag is the content's (`image.content_tag`): the same app, EdgeFlow and base image always give
        the same tag, so two dry runs print the same manifests, and a rebuild of unchanged content changes nothing.
        `scale`: RenderOptions' redis_url, redis_cluster, redis_version, prometheus_url (docs/scaling.md).
        """
        from edgeflow.loader import load_app

        from .image import DEFAULT_BASE_IMAGE, content_tag, edgeflow_distributions, image_ref

        path = Path(app_file).resolve()
        app = load_app(path)
        ns = namespace or k8s_name(app.name, "app")
        if image is None:
            if not registry:
                raise ConfigurationError("name a registry to push to with --registry REG, or an image with --image")
            dists = edgeflow_distributions()
            tag = content_tag(path.parent, dists, base_image or DEFAULT_BASE_IMAGE)
            image = image_ref(registry, k8s_name(app.name, "app"), tag)
            _warn_missing_imports(path, [d.name for d in dists])
        options = RenderOptions(image, ns, path.name, env_secret, pull_secret, **scale)
        plan = DeployPlan(app, path, ns, image, render(app, options), options)
        leaked = [k for k in SECRET_ENV if os.environ.get(k)]
        if leaked:
            # Said by name only: the values stay out of logs and manifests.
            log.warning(
                "%s set here but not copied into the manifests; to give them to the pods, run: "
                "kubectl -n %s create secret generic %s --from-literal=NAME=VALUE",
                ", ".join(leaked),
                ns,
                env_secret or "edgeflow-env",
            )
        return plan

    def with_image(self, plan: DeployPlan, image: str, env_secret: str | None, pull_secret: str | None) -> DeployPlan:
        """Return `plan` rendered again for the image that was actually pushed."""
        options = RenderOptions(image, plan.namespace, plan.app_file.name, env_secret, pull_secret)
        if plan.options is not None:
            options = replace(plan.options, image=image, env_secret=env_secret, pull_secret=pull_secret)
        return DeployPlan(plan.app, plan.app_file, plan.namespace, image, render(plan.app, options), options)

    def apply(
        self,
        cluster: Cluster,
        plan: DeployPlan,
        *,
        wait: bool = True,
        timeout: float = 300.0,
        progress: Callable[[str], None] = print,
        interval: float = 2.0,
    ) -> list[str]:
        """Apply every object, prune what main.py no longer declares, and wait for the rollouts."""
        for obj in plan.objects:
            cluster.apply(obj)
            if obj["kind"] == "Namespace":
                # Before the pods that read it: Redis's password, made once, random, never printed.
                labels = {"app.kubernetes.io/managed-by": "edgeflow", "edgeflow.io/app": plan.app.name}
                secret = redis_secret_name(plan.app.name)
                if cluster.ensure_secret(plan.namespace, secret, labels, lambda: {PASSWORD_KEY: token_hex(24)}):
                    progress(f"created secret/{secret} with a random Redis password")
        pruned = cluster.prune(plan.namespace, plan.app.name, plan.objects)
        if wait:
            progress(f"waiting for {len(plan.deployments)} deployments in namespace {plan.namespace}:")
            cluster.wait(plan.namespace, plan.deployments, timeout, progress, interval)
        return pruned


def _warn_missing_imports(main: Path, dists: list[str]) -> None:
    """Warn of each module main.py imports that the image would not have (edgeflow_k8s.appdeps)."""
    from .appdeps import app_dependencies, missing_imports

    deps = app_dependencies(main.parent, dists)
    for line in deps.left_out:
        log.info("%s lists %r: the image has this machine's EdgeFlow (%s) instead", deps.source, line, ", ".join(dists))
    listed = deps.source or "requirements.txt"
    for miss in missing_imports(main, dists, deps):
        where = f"here it comes from {miss.distribution}" if miss.distribution else "nothing installed here has it"
        add = miss.distribution or f"the distribution that provides {miss.module}"
        log.warning(
            "%s imports %s, which neither requirements.txt nor pyproject.toml beside it lists (%s): the image won't "
            "have it, and the pods will fail at start; add %s to %s",
            main.name,
            miss.module,
            where,
            add,
            listed,
        )
