"""The cluster side of a deploy, through the official `kubernetes` client: apply, prune, wait, status, logs."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ClusterError, RolloutTimeoutError
from .manifests import FIELD_MANAGER, NODE_LABEL, app_selector

__all__ = ["APPLY", "Cluster", "RolloutState", "kubeconfig_path"]

log = logging.getLogger("edgeflow.k8s.cluster")
APPLY = "application/apply-patch+yaml"
REQUEST_TIMEOUT = 15
# What `edgeflow deploy` manages, in the order it applies them; pruning looks at the same kinds.
_KINDS: dict[str, tuple[str, str, bool]] = {
    # kind: (API class, method suffix, namespaced)
    "Namespace": ("CoreV1Api", "namespace", False),
    "Service": ("CoreV1Api", "namespaced_service", True),
    "Deployment": ("AppsV1Api", "namespaced_deployment", True),
    # A rendered Redis Cluster (rediscluster.py) and KEDA's objects (keda.py).
    "StatefulSet": ("AppsV1Api", "namespaced_stateful_set", True),
    "Job": ("BatchV1Api", "namespaced_job", True),
    "TriggerAuthentication": ("CustomObjectsApi", "keda.sh/v1alpha1/triggerauthentications", True),
    "ScaledObject": ("CustomObjectsApi", "keda.sh/v1alpha1/scaledobjects", True),
}
# The hardening's kinds (edgeflow_k8s.security, edgeflow_k8s.availability); the Secret is only created, never applied.
_KINDS.update(
    {
        "Secret": ("CoreV1Api", "namespaced_secret", True),
        "PodDisruptionBudget": ("PolicyV1Api", "namespaced_pod_disruption_budget", True),
        "NetworkPolicy": ("NetworkingV1Api", "namespaced_network_policy", True),
    }
)
_PRUNABLE = (
    "ScaledObject",
    "TriggerAuthentication",
    "Deployment",
    "StatefulSet",
    "Job",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
)


def kubeconfig_path(explicit: str | None = None) -> Path:
    """Return the kubeconfig to use: `--kubeconfig`, else the first file in KUBECONFIG, else ~/.kube/config."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("KUBECONFIG", "")
    for part in env.split(os.pathsep):
        if part:
            return Path(part).expanduser()
    return Path("~/.kube/config").expanduser()


@dataclass
class RolloutState:
    """Where one Deployment's rollout stands."""

    name: str
    desired: int
    updated: int
    ready: int
    available: int
    observed: bool

    @property
    def done(self) -> bool:
        """True when every replica runs the new template and is available."""
        return self.observed and self.updated >= self.desired and self.available >= self.desired

    def line(self) -> str:
        """Return a short progress line."""
        mark = "ok" if self.done else ".."
        return f"  [{mark}] {self.name:<24} {self.ready}/{self.desired} ready, {self.updated} updated"


class Cluster:
    """One Kubernetes cluster reached through an `ApiClient`."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.sent: list[dict[str, Any]] = []

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        """Load the kubeconfig (or the in-cluster account) and check that the API server answers."""
        from kubernetes import client, config

        cfg = client.Configuration()
        path = kubeconfig_path(kubeconfig)
        try:
            if path.is_file():
                config.load_kube_config(
                    config_file=str(path), context=context, client_configuration=cfg, persist_config=False
                )
            elif os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
                config.load_incluster_config(client_configuration=cfg)
            else:
                raise ClusterError(
                    f"no kubeconfig at {path}: copy your cluster's kubeconfig there (k3s: /etc/rancher/k3s/k3s.yaml), "
                    "set KUBECONFIG, or pass --kubeconfig FILE"
                )
        except config.ConfigException as exc:
            raise ClusterError(f"the kubeconfig {path} can't be used: {exc}; check its current context") from exc
        cluster = cls(client.ApiClient(cfg))
        cluster.check(cfg.host)
        return cluster

    def check(self, host: str) -> None:
        """Ask the API server its version; raise ClusterError with what to do when it can't be reached."""
        from kubernetes import client

        try:
            version = client.VersionApi(self.api_client).get_code(_request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            raise ClusterError(
                f"can't reach the Kubernetes API at {host}: {_reason(exc)}; check that the cluster is up and that "
                "the kubeconfig's server address is reachable from here (`kubectl cluster-info`)"
            ) from exc
        log.info("cluster %s answers: Kubernetes %s", host, version.git_version)

    def _call(self, kind: str, verb: str, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        api_name, suffix, _ = _KINDS[kind]
        api = self._api(api_name)
        try:
            if api_name == "CustomObjectsApi":
                return _custom_object(api, suffix, verb, args, kwargs)
            return getattr(api, f"{verb}_{suffix}")(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status == 404 and api_name == "CustomObjectsApi":
                raise ClusterError(
                    f"the cluster has no {kind} ({suffix.rsplit('/', 1)[0]}): install KEDA "
                    "(https://keda.sh/docs/deploy/) for nodes declared with max_replicas"
                ) from exc
            raise ClusterError(
                f"the cluster refused to {verb} a {kind}: {exc.status} {exc.reason}: {_message(exc)}"
            ) from exc
        except Exception as exc:
            raise ClusterError(f"can't {verb} a {kind}: {_reason(exc)}; is the cluster still reachable?") from exc

    def _api(self, name: str) -> Any:
        """The client's API group object called `name` (CoreV1Api, AppsV1Api, PolicyV1Api, ...), made once."""
        from kubernetes import client

        apis = self.__dict__.setdefault("_apis", {"CoreV1Api": self.core, "AppsV1Api": self.apps})
        if name not in apis:
            apis[name] = getattr(client, name)(self.api_client)
        return apis[name]

    def ensure_secret(
        self, namespace: str, name: str, labels: dict[str, str], data: Callable[[], dict[str, str]]
    ) -> bool:
        """Create the Secret `name` from `data()` unless it exists (its value is kept across deploys); True if made."""
        from kubernetes.client.exceptions import ApiException

        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "type": "Opaque",
            "stringData": data(),
        }
        try:
            self._call("Secret", "create", namespace, body, field_manager=FIELD_MANAGER)
        except ClusterError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409:
                return False
            raise
        log.info("created secret/%s", name)
        return True

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply `obj` as field manager `edgeflow`, taking over fields other managers changed."""
        kind, meta = obj["kind"], obj["metadata"]
        self.sent.append(obj)
        args = [meta["name"]] if not _KINDS[kind][2] else [meta["name"], meta["namespace"]]
        self._call(kind, "patch", *args, obj, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY)
        log.info("applied %s/%s", kind.lower(), meta["name"])

    def prune(
        self, namespace: str, app: str, keep: Iterable[dict[str, Any]], why: str = "no longer in the app"
    ) -> list[str]:
        """Delete this app's Deployments and Services that are not in `keep` (nodes removed from main.py)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in keep}
        removed: list[str] = []
        for kind in _PRUNABLE:
            try:
                found = self._call(kind, "list", namespace, label_selector=app_selector(app))
            except ClusterError:
                if _KINDS[kind][0] == "CustomObjectsApi":
                    continue  # no KEDA in this cluster: nothing of it to prune
                raise
            for item in found.items:
                if (kind, item.metadata.name) not in wanted:
                    self._call(kind, "delete", item.metadata.name, namespace, propagation_policy="Background")
                    removed.append(f"{kind.lower()}/{item.metadata.name}")
                    log.info("deleted %s/%s (%s)", kind.lower(), item.metadata.name, why)
        return removed

    def rollout(self, namespace: str, name: str) -> RolloutState:
        """Return the rollout state of the Deployment `name`."""
        d = self._call("Deployment", "read", name, namespace)
        st = d.status
        return RolloutState(
            name=name,
            desired=d.spec.replicas if d.spec.replicas is not None else 1,
            updated=(st and st.updated_replicas) or 0,
            ready=(st and st.ready_replicas) or 0,
            available=(st and st.available_replicas) or 0,
            observed=bool(st and (st.observed_generation or 0) >= (d.metadata.generation or 0)),
        )

    def wait(
        self,
        namespace: str,
        names: list[str],
        timeout: float,
        progress: Callable[[str], None],
        interval: float = 2.0,
    ) -> None:
        """Wait until every Deployment in `names` has rolled out; on timeout raise with a failure summary."""
        deadline = time.monotonic() + timeout
        shown: dict[str, str] = {}
        while True:
            states = [self.rollout(namespace, n) for n in names]
            for s in states:
                if shown.get(s.name) != s.line():
                    shown[s.name] = s.line()
                    progress(s.line())
            pending = [s for s in states if not s.done]
            if not pending:
                return
            if time.monotonic() >= deadline:
                summary = self.failure_summary(namespace, [s.name for s in pending])
                raise RolloutTimeoutError(
                    f"{len(pending)} of {len(names)} deployments not ready after {timeout:.0f}s: "
                    f"{', '.join(s.name for s in pending)}; see the summary above, fix, and deploy again",
                    summary=summary,
                )
            time.sleep(interval)

    def pods(self, namespace: str, selector: str) -> list[Any]:
        """Return the pods matching the label `selector`."""
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def failure_summary(self, namespace: str, names: list[str], log_lines: int = 10, events: int = 5) -> str:
        """Describe why `names` are not ready: each pod's phase and waiting reasons, last events, last log lines."""
        out: list[str] = []
        for name in names:
            d = self._call("Deployment", "read", name, namespace)
            match = d.spec.selector.match_labels or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
            pods = self.pods(namespace, selector)
            out.append(f"deployment {name}: {len(pods)} pod(s)")
            for pod in pods:
                out.append(f"  pod {pod.metadata.name}: {pod.status.phase}{_waiting(pod)}")
                found = self.core.list_namespaced_event(
                    namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
                ).items
                for ev in found[-events:]:
                    out.append(f"    event {ev.type} {ev.reason}: {ev.message}")
                try:
                    text = self.core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, tail_lines=log_lines, _request_timeout=REQUEST_TIMEOUT
                    )
                except Exception as exc:
                    text = f"(no logs: {_reason(exc)})"
                for line in (text or "(no log lines yet)").splitlines()[-log_lines:]:
                    out.append(f"    log | {line}")
        return "\n".join(out)

    def deployments(self, namespace: str, selector: str) -> list[Any]:
        """Return the Deployments matching `selector`."""
        return list(self._call("Deployment", "list", namespace, label_selector=selector).items)

    def services(self, namespace: str, selector: str) -> list[Any]:
        """Return the Services matching `selector`."""
        return list(self._call("Service", "list", namespace, label_selector=selector).items)

    def node_pods(self, namespace: str, node: str) -> list[Any]:
        """Return the pods of the EdgeFlow node `node` (its name in main.py)."""
        return self.pods(namespace, f"{NODE_LABEL}={node},app.kubernetes.io/managed-by=edgeflow")

    def logs(self, namespace: str, pod: str, tail: int | None) -> str:
        """Return the last `tail` log lines of `pod` (all when None)."""
        try:
            return str(self.core.read_namespaced_pod_log(pod, namespace, tail_lines=tail))
        except Exception as exc:
            raise ClusterError(f"can't read the logs of pod {pod}: {_reason(exc)}") from exc

    def follow(self, namespace: str, pod: str, tail: int | None) -> Iterator[str]:
        """Yield `pod`'s log lines as they come."""
        resp = self.core.read_namespaced_pod_log(pod, namespace, follow=True, tail_lines=tail, _preload_content=False)
        buffer = b""
        try:
            for chunk in resp.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buffer:
                yield buffer.decode(errors="replace")
        finally:
            resp.release_conn()

    def follow_all(self, namespace: str, pods: list[str], tail: int | None, emit: Callable[[str], None]) -> None:
        """Follow several pods at once, each line prefixed with its pod, until every stream ends."""
        lock = threading.Lock()

        def one(pod: str) -> None:
            try:
                for line in self.follow(namespace, pod, tail):
                    with lock:
                        emit(f"[{pod}] {line}")
            except Exception as exc:
                with lock:
                    emit(f"[{pod}] (log stream ended: {_reason(exc)})")

        threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)

    def delete_app(self, namespace: str, app: str, keep_namespace: bool) -> list[str]:
        """Delete the app's Deployments and Services, then its Namespace when EdgeFlow created it."""
        removed = self.prune(namespace, app, keep=[], why="edgeflow delete")
        for item in self._call("Secret", "list", namespace, label_selector=app_selector(app)).items:
            self._call("Secret", "delete", item.metadata.name, namespace)
            removed.append(f"secret/{item.metadata.name}")
        if not keep_namespace:
            ns = self._call("Namespace", "read", namespace)
            labels = ns.metadata.labels or {}
            if labels.get("edgeflow.io/app") == app and labels.get("app.kubernetes.io/managed-by") == "edgeflow":
                self._call("Namespace", "delete", namespace)
                removed.append(f"namespace/{namespace}")
        return removed


class _Listed:
    """A custom objects list as the typed ones look: `.items`, each with `.metadata.name`."""

    def __init__(self, raw: dict[str, Any]) -> None:
        from types import SimpleNamespace

        self.items = [SimpleNamespace(metadata=SimpleNamespace(name=i["metadata"]["name"])) for i in raw["items"]]


def _custom_object(api: Any, suffix: str, verb: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call CustomObjectsApi for KEDA's resources (`suffix` is `group/version/plural`) as the typed APIs are called."""
    group, version, plural = suffix.split("/")
    kwargs.pop("propagation_policy", None)
    if verb == "list":
        (namespace,) = args
        return _Listed(api.list_namespaced_custom_object(group, version, namespace, plural,
                                                         _request_timeout=REQUEST_TIMEOUT, **kwargs))  # fmt: skip
    name, namespace, *body = args
    method = getattr(api, f"{verb}_namespaced_custom_object")
    return method(group, version, namespace, plural, name, *body, _request_timeout=REQUEST_TIMEOUT, **kwargs)


def _waiting(pod: Any) -> str:
    reasons = []
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        if cs.state and cs.state.waiting:
            reasons.append(f"{cs.state.waiting.reason}: {cs.state.waiting.message or ''}".rstrip(": "))
        elif cs.state and cs.state.terminated:
            reasons.append(f"terminated {cs.state.terminated.reason} (exit {cs.state.terminated.exit_code})")
        if cs.restart_count:
            reasons.append(f"{cs.restart_count} restart(s)")
    return f" ({'; '.join(reasons)})" if reasons else ""


def _message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", exc.body))
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")


def _reason(exc: BaseException) -> str:
    if isinstance(getattr(exc, "status", None), int):  # an ApiException: its status line is the useful part
        return f"{exc.status} {getattr(exc, 'reason', '')}".strip()  # type: ignore[attr-defined]
    # urllib3 wraps the cause several levels deep; the innermost message says "Connection refused" and the like.
    seen = exc
    while getattr(seen, "reason", None) is not None and isinstance(seen.reason, BaseException):
        seen = seen.reason
    return str(seen) or type(seen).__name__
