"""The FastAPI application behind `WebInterface`: MJPEG streams, the dashboard, its WebSocket and the JSON API."""

from __future__ import annotations

import asyncio
import json
import math
import time
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ._streams import BOUNDARY, TopicStream

if TYPE_CHECKING:
    from .interface import WebInterface

__all__ = ["MJPEGResponse", "SafeJSONResponse", "build_app", "json_text", "snapshot"]

_PUSH_EVERY = 1.0
_NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate", "Pragma": "no-cache"}


def _finite(obj: Any, depth: int = 0) -> Any:
    """`obj` with every NaN or infinity replaced by None (JSON has no such numbers, and browsers refuse them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if depth > 64:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, depth + 1) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """`obj` as strict JSON: non-finite numbers become null, and anything else unencodable its str()."""
    return json.dumps(_finite(obj), allow_nan=False, default=str, separators=(",", ":"))


class SafeJSONResponse(JSONResponse):
    """FastAPI's JSON response, with non-finite numbers as null instead of an error."""

    def render(self, content: Any) -> bytes:
        return json_text(content).encode()


class MJPEGResponse(Response):
    """A `multipart/x-mixed-replace` stream of one topic's newest JPEG, for as long as the viewer stays."""

    media_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"

    def __init__(self, stream: TopicStream) -> None:
        # No super().__init__(): it would announce a Content-Length, and this body never ends by itself.
        self.status_code = 200
        self.background = None
        headers = {**_NO_CACHE, "X-Accel-Buffering": "no", "Content-Type": self.media_type}
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        stream = self.stream
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        stream.attach()
        try:
            last = 0
            while not gone.is_set() and not stream.closed:
                seq, part = stream.part
                if seq != last and part:
                    last = seq
                    # The server awaits here while this viewer's socket is full; others are not held up, and
                    # newer frames simply replace the part this viewer will get next.
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                else:
                    await stream.wait_part(timeout=0.5)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": f"--{BOUNDARY}--\r\n".encode()})
        except OSError:
            pass
        finally:
            stream.detach()
            watcher.cancel()


@cache
def dashboard_html() -> str:
    """Return the dashboard page with its stylesheet and scripts inlined (no CDN: edge sites are often offline).

    The charts are uPlot's (static/vendor, its MIT license beside it), inlined like the rest: one request, and
    nothing for a token to be added to.
    """
    static = resources.files("edgeflow_web") / "static"
    page = (static / "dashboard.html").read_text(encoding="utf-8")
    css = (static / "dashboard.css").read_text(encoding="utf-8")
    js = (static / "dashboard.js").read_text(encoding="utf-8")
    uplot_css = (static / "vendor" / "uPlot.min.css").read_text(encoding="utf-8")
    uplot_js = (static / "vendor" / "uPlot.iife.min.js").read_text(encoding="utf-8")
    return (
        page.replace("/*@UPLOT_CSS@*/", uplot_css)
        .replace("/*@UPLOT_JS@*/", uplot_js)
        .replace("/*@CSS@*/", css)
        .replace("/*@JS@*/", js)
    )


def _topic_entry(status: dict[str, Any]) -> dict[str, Any]:
    data = status.get("data") or {}
    entry = {k: status.get(k) for k in ("fps", "stream_fps", "frame_id", "timestamp", "viewers", "late", "encoded")}
    entry["kind"] = data.get("kind")
    entry["shape"] = data.get("shape")
    if entry["kind"] not in ("image", None):
        entry["data"] = data
    last = status.get("last_arrival")
    entry["age_s"] = round(time.time() - last, 3) if last else None
    if entry["kind"] not in ("image", None) and status.get("timestamp") is not None:
        entry["meta"] = status.get("meta")
    return entry


def snapshot(web: WebInterface) -> dict[str, Any]:
    """Return what the dashboard shows: the graph with live figures, and each topic's rates."""
    gw = web.gateway
    aggregator = getattr(gw, "aggregator", None)
    graph: dict[str, Any] = getattr(gw, "graph", None) or {"nodes": [], "links": []}
    if aggregator is not None:
        nodes, links = aggregator.nodes(), aggregator.links()
    else:
        nodes, links = [dict(n) for n in graph.get("nodes", [])], [dict(ln) for ln in graph.get("links", [])]
    topics = {t: _topic_entry(web.hub.stream(t).status()) for t in web.topics()}
    latest = web.history.samples[-1] if web.history.samples else None
    return {
        "app": graph.get("app") or getattr(gw, "app_name", None),
        "gateway": gw.name,
        "nodes": nodes,
        "links": links,
        "topics": topics,
        "secured": web.secured,
        "traces": aggregator.traces() if aggregator is not None else [],
        "history": latest,
        "ts": time.time(),
    }


def _unknown_topic(web: WebInterface, topic: str) -> JSONResponse:
    known = web.topics()
    listing = ", ".join(known) or "none yet"
    what = f"unknown topic {topic!r}" if topic else "no image topic has reached the gateway yet"
    return SafeJSONResponse({"detail": f"{what}; known topics: {listing}", "topics": known}, status_code=404)


def build_app(web: WebInterface) -> FastAPI:
    """Build the FastAPI app of `web`, user routes first so that they win a clash with the built-in ones."""
    # No Swagger UI: it loads its assets from a CDN, which a gateway on a robot usually can't reach.
    api = FastAPI(
        title="EdgeFlow gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=SafeJSONResponse,
    )
    for path, endpoint, methods, kwargs in web.user_routes:
        api.add_api_route(path, endpoint, methods=methods, **kwargs)

    @api.get("/", include_in_schema=False)
    async def index(request: Request) -> RedirectResponse:
        query = request.url.query
        return RedirectResponse("/dashboard" + (f"?{query}" if query else ""))

    @api.get("/health")
    async def health() -> JSONResponse:
        # Liveness: the web server answers, and the gateway's TCP intake can accept connections (it retries when
        # the process runs out of file descriptors; restarting the pod is the cure if that lasts).
        intake = getattr(web.gateway, "intake_ok", lambda: True)()
        body = {"status": "ok" if intake else "intake down", "gateway": web.gateway.name, "intake": intake}
        return SafeJSONResponse(body, status_code=200 if intake else 503)

    @api.get("/ready")
    def ready() -> JSONResponse:
        # A plain def: FastAPI runs it in its threadpool, so a slow Redis ping never stalls the event loop.
        receiving = web.gateway_receiving()
        broker = web.broker_answers()
        ok = receiving and broker
        body = {"status": "ready" if ok else "not ready", "receiving": receiving, "broker": broker}
        return SafeJSONResponse(body, status_code=200 if ok else 503)

    @api.get("/api/status")
    async def status() -> dict[str, Any]:
        return {"gateway": web.gateway.name, "topics": {t: web.hub.stream(t).status() for t in web.topics()}}

    @api.get("/api/fps")
    async def fps() -> dict[str, float]:
        return {t: web.hub.stream(t).fps() for t in web.topics()}

    @api.get("/api/nodes")
    async def nodes() -> dict[str, Any]:
        snap = snapshot(web)
        return {k: snap[k] for k in ("app", "gateway", "nodes", "links", "ts")}

    @api.get("/api/history")
    async def history(seconds: float = 600.0) -> dict[str, Any]:
        return web.history.series(max(1.0, min(seconds, 86_400.0)))

    @api.get("/api/traces")
    def traces(window: float = 30.0) -> dict[str, Any]:
        aggregator = getattr(web.gateway, "aggregator", None)
        paths = aggregator.traces(max(1.0, min(window, 3600.0))) if aggregator is not None else []
        return {"paths": paths}

    @api.get("/metrics")
    def metrics(request: Request) -> Response:
        # The whole app as this gateway gathers it; a node's own process serves its replicas on :9464.
        aggregator = getattr(web.gateway, "aggregator", None)
        if aggregator is None:
            return JSONResponse({"detail": "this gateway runs outside a runner: it has no statistics"}, 503)
        from edgeflow_prometheus.aggregate import exposition

        body, kind = exposition(aggregator, request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": kind, **_NO_CACHE})

    @api.get("/video")
    async def first_video() -> Response:
        images = web.image_topics()
        if not images:
            return _unknown_topic(web, "")
        return await video(images[0])

    @api.get("/video/{topic}")
    async def video(topic: str) -> Response:
        if topic not in web.topics():
            return _unknown_topic(web, topic)
        stream = web.hub.stream(topic)
        if stream.is_image_topic() is False:
            kind = (stream.status().get("data") or {}).get("kind")
            return SafeJSONResponse(
                {
                    "detail": f"topic {topic!r} carries {kind} data, not images; /api/status shows it",
                    "topics": web.image_topics(),
                },
                status_code=404,
            )
        return MJPEGResponse(stream)

    @api.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(dashboard_html(), headers=_NO_CACHE)

    @api.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        try:
            next_push = 0.0
            while not web.closing:
                now = time.monotonic()
                if now >= next_push:
                    # One snapshot a second whatever the client sends: its messages are read and dropped, so a
                    # client can't make the gateway build snapshots as fast as it can send.
                    await ws.send_text(json_text(await run_in_threadpool(snapshot, web)))
                    next_push = now + _PUSH_EVERY
                try:
                    await asyncio.wait_for(ws.receive_text(), max(0.0, next_push - time.monotonic()))
                except TimeoutError:
                    pass
        except WebSocketDisconnect:
            return
        await ws.close()

    return api
