"""The seed's topic API at run time, and pieces found by name: a broker, an interface, a metrics exporter."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest

from edgeflow import EdgeApp, GatewayInterface, RedisBroker, hookimpl
from edgeflow.embedded import free_port
from edgeflow.errors import ConfigurationError, PluginError
from edgeflow.frame import Frame
from edgeflow.nodes import GatewayNode, ProducerNode, SinkNode
from edgeflow.plugins import get_plugin_manager
from edgeflow.testing import RunningApp, wait_for


def test_input_topics_set_in_configure_read_a_declared_topic(redis_url: str, app_name: str) -> None:
    """As the seed says: a consumer sets self.input_topics in configure(); the producer publishes under its topic."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))
    got: list[int] = []

    @app.node(name="camera", type="producer", fps=200, output_topic="frames")
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return {"i": self.i}

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def configure(self) -> None:
            self.input_topics = ["frames"]

        def process(self, data: Any) -> None:
            got.append(data["i"])

    with RunningApp(app) as run:
        assert wait_for(lambda: len(got) >= 20, timeout=10), got
        summary = run.stop()
    assert got == sorted(got), "in order, from the topic 'frames'"
    assert summary["store"]["frames_in"] >= 20
    probe = RedisBroker(redis_url)
    probe.bind(app_name)
    assert probe.client.exists(probe.stream_key("frames")) == 1, "the stream is named after the topic"
    assert probe.client.exists(probe.stream_key("camera")) == 0
    probe.close()


def test_an_output_topic_changed_in_configure_is_a_clear_error(redis_url: str, app_name: str) -> None:
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="camera", type="producer")
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.output_topic = "elsewhere"

        def produce(self) -> Any:
            return b"x"

    @app.node(name="store", type="sink")
    class Store(SinkNode):
        def process(self, data: Any) -> None:
            pass

    app.link("camera").to("store")
    run = RunningApp(app, ["camera"]).start()
    worker_error = wait_for(lambda: not run._thread.is_alive(), timeout=10)
    assert worker_error, "the node that can't run stops the run"
    with pytest.raises(ConfigurationError, match=r"configure\(\) set output_topic='elsewhere'.*declare it with"):
        run.stop()


class Collect(GatewayInterface):
    """A gateway interface collecting (topic, frame id)."""

    seen: ClassVar[list[tuple[str, int]]] = []

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def on_frame(self, topic: str, frame: Frame) -> None:
        with self.lock:
            Collect.seen.append((f"{self.tag}:{topic}", frame.frame_id))

    def stop(self, timeout: float = 3.0) -> None:
        pass


class Exporter:
    records: ClassVar[list[dict[str, Any]]] = []

    def export(self, record: dict[str, Any]) -> None:
        Exporter.records.append(record)


class Named:
    """A plugin registering an interface, an exporter and a broker by name."""

    @hookimpl
    def register_interfaces(self, register: Any) -> None:
        register("collect", Collect)

    @hookimpl
    def register_metrics(self, register: Any) -> None:
        register("memory", Exporter)


def test_an_app_uses_an_interface_an_exporter_and_a_broker_by_name(
    redis_url: str, app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = Named()
    get_plugin_manager().register(plugin, name="named")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("EDGEFLOW_BROKER", "redis")
    monkeypatch.setenv("EDGEFLOW_METRICS", "memory")
    monkeypatch.setenv("GATEWAY_TCP_PORT", str(free_port()))
    Collect.seen, Exporter.records = [], []
    app = EdgeApp(app_name)  # the broker EDGEFLOW_BROKER names

    @app.node(name="camera", type="producer", fps=100)
    class Camera(ProducerNode):
        def configure(self) -> None:
            self.i = 0

        def produce(self) -> Any:
            self.i += 1
            return b"x" if self.i <= 10 else None

    @app.node(name="gateway", type="gateway")
    class Gateway(GatewayNode):
        def configure(self) -> None:
            self.add_interface("collect", tag="c")

    app.link("camera").to("gateway")
    assert isinstance(app.broker, RedisBroker) and app.broker.url == redis_url
    with RunningApp(app):
        assert wait_for(lambda: len(Collect.seen) >= 10, timeout=10), Collect.seen
        time.sleep(1.2)  # a statistics report
    assert Collect.seen[:10] == [("c:camera", i) for i in range(10)]
    assert {r["node"] for r in Exporter.records} == {"camera", "gateway"}


def test_unknown_names_say_what_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PluginError, match=r"EdgeApp\(broker=...\): no broker named 'kafka' is installed \(installed "
                       r"brokers: dualredis, redis, shm\)"):  # fmt: skip
        EdgeApp("x", broker="kafka")
    monkeypatch.setenv("EDGEFLOW_BROKER", "nats")
    with pytest.raises(PluginError, match="EDGEFLOW_BROKER: no broker named 'nats'"):
        _ = EdgeApp("x").broker
    gw = GatewayNode()
    gw.name = "gw"
    with pytest.raises(PluginError, match="no interface named 'ros2' is installed"):
        gw.add_interface("ros2")
