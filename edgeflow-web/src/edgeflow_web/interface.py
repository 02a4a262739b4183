"""`WebInterface`: the gateway's web face, served by FastAPI and uvicorn in a thread of their own."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from edgeflow.config import settings
from edgeflow.errors import ConfigurationError
from edgeflow.nodes.gateway.interfaces import GatewayInterface

from ._history import History
from ._streams import StreamHub

if TYPE_CHECKING:
    import uvicorn

    from edgeflow.frame import Frame

__all__ = ["WebInterface"]

log = logging.getLogger("edgeflow.web")
F = TypeVar("F", bound=Callable[..., Any])


class WebInterface(GatewayInterface):
    """MJPEG streams of every image topic, a live dashboard and a JSON API, on one HTTP port.

    Args:
        port: HTTP port; 0 picks a free one (read `.port` after `start()`).
        host: address to listen on.
        buffer_delay: seconds each image frame waits so that frames of replicas finishing out of order are
            put back in timestamp order; 0 shows each frame at once and drops any older than one shown.
        quality: JPEG quality, 1..100.
        max_fps: the most JPEGs a topic's stream makes per second, whatever the frame rate: each one is the
            newest frame at the time. Defaults to GATEWAY_STREAM_MAX_FPS or 60 (what a display shows); 0 for
            every frame. Frames still reach the gateway, its API and its dashboard at their own rate.
        token: the secret that every request must carry; defaults to the EDGEFLOW_TOKEN environment variable.
        header_timeout: seconds a request's headers may take to arrive; slower ones are closed.
        max_connections: HTTP connections held at once; more are refused (so that they can't take every file
            descriptor of the process).
        history_seconds: how many seconds of figures the dashboard's charts can show (one sample a second).
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "0.0.0.0",
        buffer_delay: float = 0.0,
        *,
        quality: int = 80,
        max_fps: float | None = None,
        token: str | None = None,
        header_timeout: float = 10.0,
        max_connections: int = 256,
        history_seconds: int = 600,
    ) -> None:
        if buffer_delay < 0:
            raise ConfigurationError(f"WebInterface: buffer_delay must be >= 0 seconds, got {buffer_delay!r}")
        if not 1 <= quality <= 100:
            raise ConfigurationError(f"WebInterface: quality must be in 1..100, got {quality!r}")
        self.port = settings.GATEWAY_HTTP_PORT if port is None else int(port)
        self.host = host
        self.buffer_delay = float(buffer_delay)
        if max_fps is None:
            raw = os.environ.get("GATEWAY_STREAM_MAX_FPS", "60")
            try:
                max_fps = float(raw)
            except ValueError:
                raise ConfigurationError(f"GATEWAY_STREAM_MAX_FPS must be a number of frames/s, got {raw!r}") from None
        if not 0 <= max_fps <= 10_000:
            raise ConfigurationError(f"WebInterface: max_fps must be in 0..10000 (0: no cap), got {max_fps!r}")
        self.max_fps = float(max_fps)
        if header_timeout <= 0 or max_connections < 1:
            raise ConfigurationError("WebInterface: header_timeout must be > 0 and max_connections >= 1")
        self.header_timeout = float(header_timeout)
        self.max_connections = int(max_connections)
        self.hub = StreamHub(buffer_delay=self.buffer_delay, quality=quality, max_fps=self.max_fps)
        self.user_routes: list[tuple[str, Callable[..., Any], list[str], dict[str, Any]]] = []
        self.history = History(self._figures, seconds=max(10, int(history_seconds)))
        self._token = token
        self.secured = False
        self.closing = False
        self._api: Any = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # User API -------------------------------------------------------------------------------------------
    def route(self, path: str, methods: Sequence[str] = ("GET",), **kwargs: Any) -> Callable[[F], F]:
        """Decorate a function to serve `path` (FastAPI path syntax); extra kwargs go to FastAPI's add_api_route."""
        if not path.startswith("/"):
            raise ConfigurationError(f"WebInterface.route: path must start with '/', got {path!r}")

        def decorate(fn: F) -> F:
            entry = (path, fn, [m.upper() for m in methods], kwargs)
            self.user_routes.append(entry)
            if self._api is not None:
                self._api.add_api_route(path, fn, methods=entry[2], **kwargs)
            return fn

        return decorate

    def readiness(self) -> tuple[int, str] | None:
        """`/ready` on this interface's port: it answers without the token, and then says only ready or not."""
        return (self.port, "/ready") if self.port else None

    @property
    def url(self) -> str:
        """The base URL to reach this interface from this machine."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    # What the routes ask ---------------------------------------------------------------------------------
    def topics(self) -> list[str]:
        """Return the topics linked into the gateway, then any other that sent frames, in order."""
        linked = list(getattr(self.gateway, "topics", None) or [])
        return list(dict.fromkeys(linked + self.hub.names()))

    def image_topics(self) -> list[str]:
        """Return the topics whose newest frame is an image, or that sent nothing yet."""
        out = []
        for topic in self.topics():
            stream = self.hub.get(topic)
            if stream is None or stream.is_image_topic() is not False:
                out.append(topic)
        return out

    def gateway_receiving(self, within: float = 5.0) -> bool:
        """Return True when a frame reached the gateway in the last `within` seconds."""
        try:
            return bool(self.gateway.is_receiving(within))
        except AttributeError:  # a gateway outside a runner has no statistics: judge by the frames seen here
            last = max((s.last_arrival or 0.0 for s in map(self.hub.stream, self.hub.names())), default=0.0)
            return time.time() - last <= within

    def _figures(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        aggregator = getattr(self.gateway, "aggregator", None)
        if aggregator is None:
            return [], []
        return aggregator.nodes(), aggregator.links()

    def broker_answers(self) -> bool:
        """Return True when the gateway's broker answers a ping."""
        try:
            return bool(self.gateway.broker_ok())
        except Exception:
            return False

    # GatewayInterface -----------------------------------------------------------------------------------
    def on_frame(self, topic: str, frame: Frame) -> None:
        """Take a frame from the intake thread; only swaps references, never encodes or waits."""
        self.hub.put(topic, frame)

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"WebInterface can't listen on {self.host}:{self.port}: {exc.strerror}; "
                "free the port or set GATEWAY_HTTP_PORT to another one"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def start(self) -> None:
        """Bind the port, then serve from a background thread; returns at once."""
        import uvicorn

        from ._app import build_app
        from ._auth import TokenGate

        sock = self._listen()
        self.port = sock.getsockname()[1]
        token = self._token or settings.EDGEFLOW_TOKEN
        self.secured = bool(token)
        self._api = build_app(self)
        app: Any = TokenGate(self._api, token) if token else self._api
        if not token:
            log.warning("web: EDGEFLOW_TOKEN is not set, so the dashboard, streams and API are open to anyone")
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            # Request lines carry ?token=..., so the access log stays off: secrets never reach the logs.
            access_log=False,
            lifespan="off",
            # uvloop and httptools (dependencies of edgeflow-web) when installed: cheaper writes per viewer.
            loop="uvloop" if _has("uvloop") else "asyncio",
            http=_http_protocol(self.header_timeout, self.max_connections),
            ws="websockets-sansio",
            # The dashboard sends nothing on its WebSocket: a client's messages stay small.
            ws_max_size=64 * 1024,
            timeout_keep_alive=5,
            limit_concurrency=self.max_connections,
            h11_max_incomplete_event_size=16 * 1024,
            timeout_graceful_shutdown=1,
        )
        # Load the app and import the protocol and loop modules here, on the calling thread, before the server
        # thread starts: its start-up then has nothing left to import, and a bad setting fails in start().
        config.load()
        config.get_loop_factory()
        server = uvicorn.Server(config)
        thread = threading.Thread(target=self._serve, args=(server, sock), name="edgeflow-web-http", daemon=True)
        thread.start()
        # Published only once running: wait_started() takes a thread that is not alive for one that died, and a
        # thread assigned but not yet started made it report a failed start (the rare "uvicorn did not start").
        self._server, self._thread = server, thread
        self.history.start()
        log.info("web: dashboard at %s/dashboard", self.url)

    @staticmethod
    def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except Exception:
            log.exception("web: the HTTP server stopped")
        finally:
            sock.close()

    def wait_started(self, timeout: float = 5.0) -> bool:
        """Block until the server accepts requests (for tests and scripts); return False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server is not None and self._server.started:
                return True
            thread = self._thread
            if thread is not None and thread.ident is not None and not thread.is_alive():
                return False
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 3.0) -> None:
        """End every stream and shut the server down within `timeout` seconds."""
        self.closing = True
        self.hub.close()
        self.history.stop()
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout * 0.7)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout * 0.3)
        if thread.is_alive():
            log.warning("web: the HTTP server did not stop within %.1fs", timeout)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _http_protocol(header_timeout: float, max_connections: int) -> Any:
    """uvicorn's httptools protocol with a header deadline and a connection cap, or h11 (no deadline) without it."""
    if not _has("httptools"):
        log.warning("web: httptools is not installed; HTTP requests have no header deadline (pip install httptools)")
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from ._guard import guarded_protocol

    return guarded_protocol(HttpToolsProtocol, header_timeout=header_timeout, max_connections=max_connections)
