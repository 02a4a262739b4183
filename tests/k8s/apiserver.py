"""A small in-memory emulation of the Kubernetes API, served over real HTTP for the real `kubernetes` client.

It serves what `edgeflow deploy/status/logs/delete` use: server-side apply (PATCH with
application/apply-patch+yaml) of Namespaces, Services, Deployments, PodDisruptionBudgets and NetworkPolicies,
creating Secrets (POST, 409 when one exists), reads, label-selector lists, deletes,
pods with logs and events, and Deployment rollout status. It keeps the semantics the deployer relies on:
`metadata.generation` moves only when a spec changes, allocated NodePorts and cluster IPs survive a re-apply,
a Deployment's pods follow its template. It does not validate objects: the tests run everything sent through
the OpenAPI schemas themselves.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

APPLY = "application/apply-patch+yaml"
OWNER = "fake.test/owner"
_ROUTES = [
    (re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$"), "Namespace", False),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services(?:/(?P<name>[^/]+))?$"), "Service", True),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods(?:/(?P<name>[^/]+)(?P<log>/log)?)?$"), "Pod", True),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$"), "Event", True),
    (re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/deployments(?:/(?P<name>[^/]+))?$"), "Deployment", True),
    (re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/secrets(?:/(?P<name>[^/]+))?$"), "Secret", True),
    (re.compile(r"^/apis/policy/v1/namespaces/(?P<ns>[^/]+)/poddisruptionbudgets(?:/(?P<name>[^/]+))?$"),
     "PodDisruptionBudget", True),
    (re.compile(r"^/apis/networking.k8s.io/v1/namespaces/(?P<ns>[^/]+)/networkpolicies(?:/(?P<name>[^/]+))?$"),
     "NetworkPolicy", True),
    # A rendered Redis Cluster, and KEDA's custom resources (stored as they come; KEDA itself is not emulated).
    (re.compile(r"^/apis/apps/v1/namespaces/(?P<ns>[^/]+)/statefulsets(?:/(?P<name>[^/]+))?$"), "StatefulSet", True),
    (re.compile(r"^/apis/batch/v1/namespaces/(?P<ns>[^/]+)/jobs(?:/(?P<name>[^/]+))?$"), "Job", True),
    (re.compile(r"^/apis/keda.sh/v1alpha1/namespaces/(?P<ns>[^/]+)/scaledobjects(?:/(?P<name>[^/]+))?$"),
     "ScaledObject", True),
    (re.compile(r"^/apis/keda.sh/v1alpha1/namespaces/(?P<ns>[^/]+)/triggerauthentications(?:/(?P<name>[^/]+))?$"),
     "TriggerAuthentication", True),
]  # fmt: skip
_API_VERSION = {"Namespace": "v1", "Service": "v1", "Pod": "v1", "Event": "v1", "Deployment": "apps/v1",
                "StatefulSet": "apps/v1", "Job": "batch/v1", "ScaledObject": "keda.sh/v1alpha1",
                "TriggerAuthentication": "keda.sh/v1alpha1", "Secret": "v1", "PodDisruptionBudget": "policy/v1",
                "NetworkPolicy": "networking.k8s.io/v1"}  # fmt: skip


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _owner(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get(OWNER)


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeKubernetes:
    """The emulated API server's state; `stuck` names Deployments whose pods never become ready."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        self.created: list[dict[str, Any]] = []
        self.stuck: set[str] = set()
        self.lock = threading.Lock()
        self._versions = itertools.count(1)
        self._ports = itertools.count(30500)
        self._ips = itertools.count(10)
        self.server: ThreadingHTTPServer | None = None

    # Serving ---------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = fake.handle(self.command, self.path, self.headers.get("Content-Type", ""), body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # the tests read `requests` instead
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # API -------------------------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        """Answer one request: (HTTP status, JSON-ready object or log text)."""
        url = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.requests.append({"method": method, "path": url.path, "query": query, "content_type": content_type})
            if url.path.rstrip("/") == "/version":
                return 200, {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-fake",
                    "gitCommit": "0",
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.22",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            for pattern, kind, _namespaced in _ROUTES:
                m = pattern.match(url.path)
                if m is None:
                    continue
                groups = m.groupdict()
                ns = groups.get("ns") or ""
                name = groups.get("name")
                if kind == "Pod" and groups.get("log"):
                    return self._log(ns, str(name), query)
                if method == "PATCH" and name:
                    return self._apply(kind, ns, name, content_type, query, body)
                if method == "GET" and name:
                    obj = self.objects.get((kind, ns, name))
                    return (200, obj) if obj else (404, _status(404, "NotFound", f"{kind.lower()} {name} not found"))
                if method == "GET":
                    return 200, self._list(kind, ns, query)
                if method == "DELETE" and name:
                    return self._delete(kind, ns, name)
                if method == "POST" and not name:
                    return self._create(kind, ns, body)
            return 404, _status(404, "NotFound", f"{method} {url.path} is not emulated")

    def _apply(
        self, kind: str, ns: str, name: str, content_type: str, query: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if content_type != APPLY or not query.get("fieldManager"):
            return 415, _status(415, "UnsupportedMediaType", f"expected {APPLY} with a fieldManager")
        obj = json.loads(body)
        if obj.get("kind") != kind or obj["metadata"].get("name") != name:
            return 400, _status(400, "BadRequest", "the body's kind and name must match the URL")
        if ns and obj["metadata"].get("namespace", ns) != ns:
            return 400, _status(400, "BadRequest", "the body's namespace must match the URL")
        if ns and ("Namespace", "", ns) not in self.objects:
            return 404, _status(404, "NotFound", f'namespaces "{ns}" not found')
        self.applied.append(copy.deepcopy(obj))
        old = self.objects.get((kind, ns, name))
        new = copy.deepcopy(obj)
        meta = new["metadata"]
        if old is None:
            meta.update(uid=f"uid-{next(self._versions)}", generation=1, resourceVersion=str(next(self._versions)))
            meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
        else:
            kept = {k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "resourceVersion")}
            meta.update(kept)
            if old.get("spec") != self._with_allocations(kind, new, old).get("spec"):
                meta["generation"] = kept["generation"] + 1
            if self._public(old) != self._public(self._with_allocations(kind, new, old)):
                meta["resourceVersion"] = str(next(self._versions))
        new = self._with_allocations(kind, new, old)
        manager = {"manager": query["fieldManager"], "operation": "Apply", "apiVersion": obj["apiVersion"]}
        meta["managedFields"] = [manager]
        if kind == "Deployment":
            self._roll(new, ns)
        if kind == "Namespace":
            new["status"] = {"phase": "Active"}
        self.objects[(kind, ns, name)] = new
        return (200 if old else 201), new

    def _create(self, kind: str, ns: str, body: bytes) -> tuple[int, Any]:
        """POST: create the object, or 409 AlreadyExists (what `ensure_secret` relies on to keep a password)."""
        obj = json.loads(body)
        name = obj["metadata"]["name"]
        if ns and ("Namespace", "", ns) not in self.objects:
            return 404, _status(404, "NotFound", f'namespaces "{ns}" not found')
        if (kind, ns, name) in self.objects:
            return 409, _status(409, "AlreadyExists", f'{kind.lower()}s "{name}" already exists')
        new = copy.deepcopy(obj)
        if kind == "Secret" and "stringData" in new:
            new["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in new.pop("stringData").items()}
        new["metadata"].update(uid=f"uid-{next(self._versions)}", resourceVersion=str(next(self._versions)))
        self.objects[(kind, ns, name)] = new
        self.created.append(copy.deepcopy(obj))
        return 201, new

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out.pop("status", None)
        for k in ("resourceVersion", "managedFields", "generation"):
            out["metadata"].pop(k, None)
        return out

    def _with_allocations(self, kind: str, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Fill in what the server allocates for a Service, keeping earlier allocations on re-apply."""
        if kind != "Service":
            return new
        spec = new["spec"]
        spec["clusterIP"] = old["spec"]["clusterIP"] if old else f"10.96.0.{next(self._ips)}"
        old_ports = {p["name"]: p for p in (old or {}).get("spec", {}).get("ports", [])}
        for port in spec["ports"]:
            if spec.get("type") == "NodePort" and "nodePort" not in port:
                port["nodePort"] = old_ports.get(port["name"], {}).get("nodePort") or next(self._ports)
        return new

    def _roll(self, deployment: dict[str, Any], ns: str) -> None:
        """Replace the Deployment's pods with ones of its current template; ready unless it is `stuck`."""
        name = deployment["metadata"]["name"]
        for key in [k for k, v in self.objects.items() if k[0] == "Pod" and _owner(v) == name]:
            del self.objects[key]
        replicas = deployment["spec"].get("replicas", 1)
        stuck = name in self.stuck
        template = deployment["spec"]["template"]
        for i in range(replicas):
            pod_name = f"{name}-{deployment['metadata']['generation']}x{i}"
            container = template["spec"]["containers"][0]
            state = (
                {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{container["image"]}"'}}
                if stuck
                else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
            )
            self.objects[("Pod", ns, pod_name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": ns,
                    "labels": dict(template["metadata"]["labels"]),
                    "annotations": {OWNER: name},
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {
                    "phase": "Pending" if stuck else "Running",
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "image": container["image"],
                            "imageID": "",
                            "ready": not stuck,
                            "restartCount": 0,
                            "state": state,
                        }
                    ],
                },
            }
            if stuck:
                self.objects[("Event", ns, f"{pod_name}.1")] = {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{pod_name}.1", "namespace": ns},
                    "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": ns},
                    "type": "Warning",
                    "reason": "Failed",
                    "message": f'Failed to pull image "{container["image"]}": not found',
                }
        ready = 0 if stuck else replicas
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }

    def _list(self, kind: str, ns: str, query: dict[str, str]) -> dict[str, Any]:
        items = [
            v
            for (k, n, _), v in sorted(self.objects.items())
            if k == kind
            and (n == ns or kind == "Namespace")
            and _matches(v["metadata"].get("labels") or {}, query.get("labelSelector"))
        ]
        if kind == "Event" and query.get("fieldSelector", "").startswith("involvedObject.name="):
            wanted = query["fieldSelector"].split("=", 1)[1]
            items = [v for v in items if v["involvedObject"]["name"] == wanted]
        return {
            "apiVersion": _API_VERSION[kind],
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }

    def _delete(self, kind: str, ns: str, name: str) -> tuple[int, Any]:
        gone = self.objects.pop((kind, ns, name), None)
        if gone is None:
            return 404, _status(404, "NotFound", f"{kind.lower()} {name} not found")
        if kind == "Deployment":
            for key in [k for k, v in self.objects.items() if k[0] == "Pod" and _owner(v) == name]:
                del self.objects[key]
        if kind == "Namespace":
            for key in [k for k in self.objects if k[1] == name]:
                del self.objects[key]
        # As the real API server: a Service comes back as the deleted object, a Namespace as Terminating.
        if kind == "Service":
            return 200, gone
        if kind == "Namespace":
            return 200, {**gone, "status": {"phase": "Terminating"}}
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _log(self, ns: str, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        obj = self.objects.get(("Pod", ns, pod))
        if obj is None:
            return 404, _status(404, "NotFound", f"pod {pod} not found")
        if obj["status"]["phase"] == "Pending":
            return 400, _status(400, "BadRequest", f'container "node" in pod "{pod}" is waiting to start')
        node = obj["metadata"]["labels"].get("edgeflow.io/node", obj["metadata"]["name"])
        lines = [f"INFO edgeflow.node.{node}: line {i} from {pod}" for i in range(1, 21)]
        tail = int(query.get("tailLines", len(lines)))
        return 200, "\n".join(lines[-tail:]) + "\n"

    # Helpers for the tests -------------------------------------------------------------------------------
    def get(self, kind: str, name: str, ns: str = "") -> dict[str, Any] | None:
        """Return the stored object, or None."""
        return self.objects.get((kind, ns, name))

    def names(self, kind: str, ns: str) -> set[str]:
        """Return the names of the stored objects of `kind` in `ns`."""
        return {n for (k, s, n) in self.objects if k == kind and s == ns}

    def kubeconfig(self, url: str) -> dict[str, Any]:
        """Return a kubeconfig that points the client at this server."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "fake", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
