"""The HTTP API through httpx against a real pipeline: status codes, token on and off, topics, custom routes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from edgeflow.embedded import EmbeddedRedis
from edgeflow_web import WebInterface

from .support import Running, make_app, mjpeg, run_pipeline

TOKEN = "s3cret-token-for-tests"


def _routes(web: WebInterface) -> None:
    @web.route("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @web.route("/items/{item}", methods=["POST"])
    def post_item(item: str) -> dict[str, str]:
        return {"created": item}


@pytest.fixture(scope="module")
def open_pipeline(redis_server: EmbeddedRedis) -> Iterator[Running]:
    app, holder = make_app(redis_server.url, routes=_routes)
    with run_pipeline(app, holder, wait_topics=("cam", "proc", "info")) as running:
        yield running


@pytest.fixture
def secured_pipeline(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    # Through the environment, as a deployment sets it; the TCP intake then needs it too.
    monkeypatch.setenv("EDGEFLOW_TOKEN", TOKEN)
    app, holder = make_app(redis_server.url, routes=_routes)
    with run_pipeline(app, holder, token=TOKEN) as running:
        yield running


def test_health_ready_and_json_api(open_pipeline: Running) -> None:
    with open_pipeline.client() as c:
        assert c.get("/health").json() == {"status": "ok", "gateway": "gw", "intake": True}
        ready = c.get("/ready")
        assert ready.status_code == 200 and ready.json()["receiving"] and ready.json()["broker"]
        fps = c.get("/api/fps").json()
        assert set(fps) == {"proc", "cam", "info"}
        assert 15 <= fps["cam"] <= 45, fps
        status = c.get("/api/status").json()["topics"]
        assert status["info"]["data"] == {"kind": "json", "value": {"temperature": 21.5, "ok": True}}
        assert status["cam"]["data"] == {"kind": "image", "shape": [240, 320, 3], "dtype": "uint8"}
        assert status["cam"]["encoded"] == 0, "nothing may be encoded while nobody watches"
        nodes = c.get("/api/nodes").json()
        assert [n["name"] for n in nodes["nodes"]] == ["cam", "info", "proc", "gw"]
        transports = {(ln["source"], ln["target"]): ln["transport"] for ln in nodes["links"]}
        assert transports == {
            ("cam", "proc"): "redis",
            ("proc", "gw"): "tcp",
            ("cam", "gw"): "tcp",
            ("info", "gw"): "tcp",
        }
        # Statistics arrive once a second over Redis Pub/Sub: every node is reported up within a few seconds.
        deadline = time.monotonic() + 6
        while any(n["status"] != "up" for n in nodes["nodes"]):
            assert time.monotonic() < deadline, nodes["nodes"]
            time.sleep(0.5)
            nodes = c.get("/api/nodes").json()
        proc = next(n for n in nodes["nodes"] if n["name"] == "proc")
        assert proc["replicas_alive"] == 2 and proc["type"] == "consumer"
        redis_link = next(ln for ln in nodes["links"] if ln["transport"] == "redis")
        assert isinstance(redis_link["depth"], int)
        assert c.get("/").status_code == 307


def test_unknown_and_non_image_topics_are_404_listing_the_known_ones(open_pipeline: Running) -> None:
    with open_pipeline.client() as c:
        r = c.get("/video/nope")
        assert r.status_code == 404
        assert r.json()["topics"] == ["proc", "cam", "info"]
        assert "proc, cam, info" in r.json()["detail"]
        r = c.get("/video/info")
        assert r.status_code == 404 and "json" in r.json()["detail"]
        assert r.json()["topics"] == ["proc", "cam"]


def test_video_without_topic_serves_the_first_image_topic(open_pipeline: Running) -> None:
    with open_pipeline.client() as c, c.stream("GET", "/video") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        first = next(r.iter_raw())
        assert first.startswith(b"--edgeflowframe\r\nContent-Type: image/jpeg")


def test_custom_routes(open_pipeline: Running) -> None:
    with open_pipeline.client() as c:
        assert c.get("/hello").json() == {"hello": "world"}
        assert c.post("/items/abc").json() == {"created": "abc"}
        assert c.get("/items/abc").status_code == 405


def test_every_route_needs_the_token_when_set(secured_pipeline: Running) -> None:
    base = secured_pipeline.base
    paths = ["/api/status", "/api/fps", "/api/nodes", "/dashboard", "/hello", "/video/cam", "/metrics", "/"]
    with httpx.Client(base_url=base, timeout=5) as anon:
        for path in paths:
            assert anon.get(path).status_code == 401, path
            assert anon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
            assert anon.get(path, params={"token": TOKEN[:-1]}).status_code == 401, path
        # The probes answer without the token (the kubelet's httpGet carries none), and say nothing but ok.
        for path in ("/health", "/ready"):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = anon.get(path, headers=headers)
                assert (r.status_code, r.json()) == (200, {"status": "ok"}), path
            assert anon.post(path).status_code == 401, "only GET is open"
        full = anon.get("/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert full.json() == {"status": "ok", "gateway": "gw", "intake": True}
        assert anon.get("/ready", params={"token": TOKEN}).json()["receiving"] is True
        assert anon.get("/health", headers={"X-EdgeFlow-Token": TOKEN}).status_code == 200
        assert anon.get("/health", params={"token": TOKEN}).status_code == 200
        assert anon.post("/items/x", params={"token": TOKEN}).json() == {"created": "x"}
        # An <img> tag can only pass the token in its URL.
        with anon.stream("GET", "/video/cam", params={"token": TOKEN}) as r:
            assert r.status_code == 200
            assert next(r.iter_raw()).startswith(b"--edgeflowframe")
    ws_url = base.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=5).close()
    assert refused.value.response.status_code == 401
    with connect(f"{ws_url}?token={TOKEN}", open_timeout=5) as ws:
        snap = ws.recv(timeout=5)
    assert '"gateway":"gw"' in str(snap).replace(" ", "")


def test_dashboard_websocket_pushes_snapshots(open_pipeline: Running) -> None:
    ws_url = open_pipeline.base.replace("http://", "ws://") + "/ws"
    with connect(ws_url, open_timeout=5) as ws:
        import json

        first = json.loads(ws.recv(timeout=5))
        second = json.loads(ws.recv(timeout=5))
    assert {n["name"] for n in first["nodes"]} == {"cam", "info", "proc", "gw"}
    assert second["ts"] > first["ts"]
    assert second["topics"]["cam"]["frame_id"] > first["topics"]["cam"]["frame_id"]


def test_ready_is_503_while_redis_is_down_and_recovers(redis_server: EmbeddedRedis) -> None:
    servers = [EmbeddedRedis().start()]
    try:
        app, holder = make_app(servers[0].url)
        with run_pipeline(app, holder) as running, running.client() as c:
            assert c.get("/ready").status_code == 200
            servers[0].stop()
            deadline = time.monotonic() + 10
            while (r := c.get("/ready")).status_code != 503:
                assert time.monotonic() < deadline, r.json()
                time.sleep(0.2)
            assert r.json()["broker"] is False
            assert c.get("/health").status_code == 200, "liveness does not depend on Redis"
            assert c.get("/api/fps").status_code == 200, "the gateway keeps serving"
            # Redis comes back on the same port: readiness follows without a restart.
            servers.append(EmbeddedRedis(port=servers[0].port).start())
            while (r := c.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline + 10, r.json()
                time.sleep(0.2)
    finally:
        for server in servers:
            server.stop()


def test_stop_ends_streams_and_frees_the_port(redis_server: EmbeddedRedis) -> None:
    app, holder = make_app(redis_server.url)
    with run_pipeline(app, holder) as running, mjpeg(running, "cam") as stream:
        next(stream)
        t0 = time.monotonic()
        running.web.stop(timeout=3.0)
        assert time.monotonic() - t0 < 2.5
        assert not running.web._thread.is_alive()  # type: ignore[union-attr]
        with pytest.raises(httpx.ConnectError):
            httpx.get(running.base + "/health", timeout=2)
