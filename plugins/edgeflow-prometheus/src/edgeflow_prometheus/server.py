"""One metrics HTTP server per process: `/metrics` from a prometheus-client registry, and routes plugins add.

Every exporter of a process that asks for the same address shares one `MetricsEndpoint` (one port for every node
of the process; the k8s plugin's probes ride on it too). A port already taken is one error in the log, not a
traceback a second: the process carries on without serving metrics.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from .collector import RecordCollector

__all__ = ["MetricsEndpoint", "endpoint", "release", "release_all"]

log = logging.getLogger("edgeflow.metrics")
#: A route answers (status, body, content type).
Route = Callable[[], tuple[int, bytes, str]]
_DETAIL = (
    b'{"detail": "missing or wrong token: send \'Authorization: Bearer <token>\' (Prometheus: authorization: '
    b'{credentials: ...} in the scrape config) or X-EdgeFlow-Token"}'
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(WSGIRequestHandler):
    # A scraper that stops sending mid-request is dropped after 10 s: no thread waits on it for ever.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # Prometheus scrapes every few seconds
        pass


def _token_of(environ: dict[str, Any]) -> str | None:
    auth = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    if environ.get("HTTP_X_EDGEFLOW_TOKEN"):
        return str(environ["HTTP_X_EDGEFLOW_TOKEN"]).strip()
    values = parse_qs(str(environ.get("QUERY_STRING", ""))).get("token")
    return values[0] if values else None


class MetricsEndpoint:
    """The latest record of each replica of this process, served as Prometheus metrics on `host:port`."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RecordCollector(self.latest))
        self.routes: dict[str, Route] = {}
        #: Paths served without the token (liveness probes say only ok or not).
        self.open_paths: set[str] = set()
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._metrics = make_wsgi_app(self.registry)
        self._server: _Server | None = None
        self.failed = False

    def put(self, record: dict[str, Any]) -> None:
        """Keep `record` as its replica's latest."""
        with self._lock:
            self._records[str(record.get("instance") or (record.get("node"), record.get("replica")))] = record

    def latest(self) -> list[dict[str, Any]]:
        """Return the latest record of every replica seen."""
        with self._lock:
            return list(self._records.values())

    def start(self) -> bool:
        """Serve from a daemon thread (once); False when the port can't be had (logged once)."""
        with self._lock:
            if self._server is not None or self.failed:
                return self._server is not None
            try:
                server = make_server(self.host, self.port, self._app, _Server, _Handler)
            except OSError as exc:
                self.failed = True
                log.error(
                    "metrics: can't serve /metrics on %s:%d (%s); this process carries on without it. Set "
                    "EDGEFLOW_METRICS_PORT to a free port (one per process on a host), or 0 for any",
                    self.host, self.port, exc.strerror or exc,
                )  # fmt: skip
                return False
            self._server = server
            self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="edgeflow-metrics", daemon=True).start()
        log.info("metrics: /metrics on %s:%d", self.host, self.port)
        return True

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        if self.token and path not in self.open_paths:
            given = _token_of(environ)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                    ("WWW-Authenticate", 'Bearer realm="edgeflow"')])  # fmt: skip
                return [_DETAIL]
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        route = self.routes.get(path)
        if route is None:
            known = ", ".join(["/metrics", *sorted(self.routes)])
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: try {known}\n".encode()]
        status, body, kind = route()
        reason = {200: "OK", 503: "Service Unavailable"}.get(status, "")
        start_response(f"{status} {reason}", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    def close(self) -> None:
        """Stop serving."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


_lock = threading.Lock()
_shared: dict[tuple[str, int], MetricsEndpoint] = {}


def endpoint(host: str, port: int, token: str | None = None) -> MetricsEndpoint:
    """Return this process's endpoint for `host:port`, shared by every exporter asking for it (port 0: a new one)."""
    with _lock:
        if port == 0:
            return MetricsEndpoint(host, port, token)
        found = _shared.get((host, port))
        if found is None:
            found = _shared[(host, port)] = MetricsEndpoint(host, port, token)
        return found


def release(ep: MetricsEndpoint) -> None:
    """Close `ep` and forget it, so that the next exporter on its address binds again."""
    with _lock:
        for key, value in list(_shared.items()):
            if value is ep:
                del _shared[key]
    ep.close()


def release_all() -> None:
    """Close every shared endpoint of this process (for tests and programs that run apps one after another)."""
    with _lock:
        endpoints = list(_shared.values())
        _shared.clear()
    for ep in endpoints:
        ep.close()
