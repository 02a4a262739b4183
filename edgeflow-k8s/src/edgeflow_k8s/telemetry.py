"""The `k8s` metrics exporter that runs inside each node's pod: Prometheus `/metrics` and probe endpoints.

Nodes serve no HTTP of their own, so the deployment sets `EDGEFLOW_METRICS=k8s`: the runner's statistics
reporter then hands this exporter every replica's snapshot once a second. The exporter keeps the latest
snapshot and serves it on EDGEFLOW_METRICS_PORT (9464). `/healthz` answers 200 while snapshots keep coming
(the runner's reporter thread is alive and the process is not frozen); `/readyz` is stricter.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DEFAULT_PORT", "PodTelemetry"]

DEFAULT_PORT = 9464
LIVE_SECONDS = 30.0
READY_SECONDS = 5.0
log = logging.getLogger("edgeflow.k8s.telemetry")


class PodTelemetry:
    """Keeps each replica's latest statistics and serves them to Prometheus and the kubelet's probes."""

    def __init__(self, port: int | None = None, host: str = "0.0.0.0") -> None:
        self.port = int(os.environ.get("EDGEFLOW_METRICS_PORT", DEFAULT_PORT)) if port is None else port
        self.host = host
        self.records: dict[tuple[str, int], dict[str, Any]] = {}
        self.last_export = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def export(self, record: dict[str, Any]) -> None:
        """Keep `record` as its replica's latest snapshot; the first call starts the HTTP server."""
        with self._lock:
            self.records[(str(record.get("node")), int(record.get("replica") or 0))] = dict(record)
            self.last_export = time.monotonic()
            if self._server is None:
                self._start()

    def _start(self) -> None:
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, kind = telemetry.respond(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # the kubelet probes every few seconds
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        thread = threading.Thread(target=self._server.serve_forever, name="edgeflow-k8s-telemetry", daemon=True)
        thread.start()
        log.info("metrics and probes on :%d (/metrics, /healthz, /readyz)", self.port)

    def age(self) -> float:
        """Return seconds since the last snapshot (infinite before the first)."""
        return time.monotonic() - self.last_export if self.last_export else float("inf")

    def respond(self, path: str) -> tuple[int, str, str]:
        """Return (status, body, content type) for a GET of `path`."""
        path = path.split("?", 1)[0]
        if path in ("/healthz", "/readyz"):
            limit = LIVE_SECONDS if path == "/healthz" else READY_SECONDS
            age = self.age()
            ok = age <= limit
            body = json.dumps({"ok": ok, "seconds_since_report": round(age, 1) if age != float("inf") else None})
            return (200 if ok else 503), body, "application/json"
        if path == "/metrics":
            return 200, self.prometheus(), "text/plain; version=0.0.4; charset=utf-8"
        return 404, "not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8"

    def prometheus(self) -> str:
        """Return the latest snapshots in Prometheus' text format, one gauge per numeric field."""
        with self._lock:
            records = list(self.records.values())
        lines: list[str] = []
        fields = sorted(
            {k for r in records for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            - {"replica", "ts"}
        )
        for field in fields:
            metric = f"edgeflow_{field}"
            lines.append(f"# TYPE {metric} gauge")
            for r in records:
                value = r.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    node = str(r.get("node", "")).replace("\\", "\\\\").replace('"', '\\"')
                    lines.append(f'{metric}{{node="{node}",replica="{int(r.get("replica") or 0)}"}} {value}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
