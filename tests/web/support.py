"""Helpers of the web tests: a real pipeline whose gateway serves a WebInterface, and an MJPEG part reader."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode
from edgeflow.runtime.runner import run_app
from edgeflow_web import WebInterface

BOUNDARY = b"edgeflowframe"


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    """A pipeline running in this process, and the WebInterface of its gateway."""

    web: WebInterface
    stop: threading.Event
    thread: threading.Thread
    token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return self.web.url

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on the interface, carrying the token when there is one."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=10, **kwargs)


def make_app(
    redis_url: str,
    *,
    fps: float = 30.0,
    shape: tuple[int, ...] = (240, 320, 3),
    noise: bool = False,
    process: Callable[[Any], Any] | None = None,
    web_kwargs: dict[str, Any] | None = None,
    routes: Callable[[WebInterface], None] | None = None,
    name: str | None = None,
    tcp_port: int | None = None,
) -> tuple[EdgeApp, dict[str, WebInterface]]:
    """Build cam -> proc (2 replicas) -> gw, cam -> gw, info (JSON) -> gw; the gateway serves a WebInterface.

    The same `name` and `tcp_port` build a twin, to run some of the nodes apart as another process would.
    """
    app = EdgeApp(name or f"w{uuid.uuid4().hex[:10]}", broker=RedisBroker(redis_url))
    holder: dict[str, WebInterface] = {}
    tcp_port, http_port = tcp_port or free_port(), free_port()
    rng = np.random.default_rng(7)
    # Precomputed frames: the producer must keep its rate on a busy 2-core machine.
    if noise:
        frames = [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(8)]
    else:
        frames = [np.full(shape, 40 + 20 * i, np.uint8) for i in range(8)]

    @app.node(name="cam", type="producer", fps=fps)
    class Cam(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return frames[self.i % len(frames)]

    @app.node(name="info", type="producer", fps=5)
    class Info(ProducerNode):
        def produce(self) -> Any:
            return {"temperature": 21.5, "ok": True}

    @app.node(name="proc", type="consumer", replicas=2)
    class Proc(ConsumerNode):
        def process(self, data: Any) -> Any:
            return process(data) if process else data

    @app.node(name="gw", type="gateway", tcp_port=tcp_port)
    class Gw(GatewayNode):
        def configure(self) -> None:
            web = WebInterface(port=http_port, host="127.0.0.1", **(web_kwargs or {}))
            if routes is not None:
                routes(web)
            self.add_interface(web)
            holder["web"] = web

    app.link("cam").to("proc").to("gw")
    app.link("cam").to("gw")
    app.link("info").to("gw")
    return app, holder


@contextmanager
def run_pipeline(
    app: EdgeApp,
    holder: dict[str, WebInterface],
    token: str | None = None,
    wait_topics: Iterable[str] = ("cam",),
    names: list[str] | None = None,
) -> Iterator[Running]:
    """Run the nodes `names` (default all) of `app` in threads; yield once the web interface serves and frames flow."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_app,
        args=(app, names or list(app.nodes)),
        kwargs={"embedded": False, "stop": stop, "install_signals": False},
        daemon=True,
    )
    thread.start()
    try:
        # Generous: on a loaded 2-core CI machine a whole pipeline can take seconds to come up.
        deadline = time.monotonic() + 30
        while "web" not in holder:
            assert time.monotonic() < deadline, "the gateway never configured its WebInterface"
            time.sleep(0.02)
        web = holder["web"]
        assert web.wait_started(30), "uvicorn did not start"
        running = Running(web, stop, thread, token)
        with running.client() as client:
            while True:
                fps = client.get("/api/fps").json()
                if all(fps.get(t, 0) > 0 for t in wait_topics):
                    break
                assert time.monotonic() < deadline, f"frames never reached the gateway: {fps}"
                time.sleep(0.1)
        yield running
    finally:
        stop.set()
        thread.join(10)


def parts(chunks: Iterable[bytes]) -> Iterator[tuple[dict[str, str], bytes]]:
    """Split a multipart/x-mixed-replace byte stream into (headers, body) parts, checking its framing."""
    buf = bytearray()
    it = iter(chunks)

    def need(n: int) -> bool:
        while len(buf) < n:
            chunk = next(it, None)
            if chunk is None:
                return False
            buf.extend(chunk)
        return True

    while True:
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = next(it, None)
            if chunk is None:
                return
            buf.extend(chunk)
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        assert lines[0] == "--" + BOUNDARY.decode(), f"bad boundary line {lines[0]!r}"
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        del buf[: end + 4]
        if not need(length + 2):
            return
        body = bytes(buf[:length])
        assert buf[length : length + 2] == b"\r\n", "a part must end with CRLF"
        del buf[: length + 2]
        yield headers, body


@contextmanager
def mjpeg(running: Running, topic: str, client: httpx.Client | None = None) -> Iterator[Iterator[tuple[dict, bytes]]]:
    """Open an MJPEG stream and yield its parts."""
    own = client is None
    client = client or running.client()
    try:
        with client.stream("GET", f"/video/{topic}") as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}"
            yield parts(response.iter_raw())
    finally:
        if own:
            client.close()


def rate(times: list[float]) -> float:
    """Events per second from their arrival times."""
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])
