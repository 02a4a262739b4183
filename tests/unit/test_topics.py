"""Topics are names: a node publishes under its output_topic; links and input_topics resolve topic names."""

from __future__ import annotations

from typing import Any

import pytest

from edgeflow import EdgeApp
from edgeflow.errors import LinkError, NodeDefinitionError
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode


def _app() -> EdgeApp:
    app = EdgeApp("topics")

    @app.node(name="camera", type="producer", output_topic="frames")
    class Camera(ProducerNode):
        def produce(self) -> Any:
            return b"x"

    @app.node(name="detector", type="consumer")
    class Detector(ConsumerNode):
        output_topic = "boxes"

        def process(self, data: Any) -> Any:
            return data

    @app.node(name="viewer", type="consumer")
    class Viewer(ConsumerNode):
        def process(self, data: Any) -> Any:
            return data

    @app.node(name="gateway", type="gateway")
    class Gateway(GatewayNode):
        pass

    return app


def test_a_node_publishes_under_its_declared_topic_or_its_name() -> None:
    app = _app()
    assert {n: s.topic for n, s in app.nodes.items()} == {
        "camera": "frames", "detector": "boxes", "viewer": "viewer", "gateway": "gateway",
    }  # fmt: skip
    assert app.topics() == {"frames": "camera", "boxes": "detector", "viewer": "viewer"}


def test_links_take_a_topic_for_the_node_that_publishes_it() -> None:
    app = _app()
    app.link("frames").to("detector")
    app.link("boxes").to("gateway")
    app.link("camera").to("viewer")
    assert [(ln.source, ln.target, ln.topic) for ln in app.links] == [
        ("camera", "detector", "frames"), ("detector", "gateway", "boxes"), ("camera", "viewer", "frames"),
    ]  # fmt: skip
    assert app.describe()["links"][0]["topic"] == "frames"


def test_an_unknown_topic_is_a_link_error_naming_the_known_ones() -> None:
    app = _app()
    with pytest.raises(LinkError, match=r"no node or topic of that name\. Known nodes and topics: boxes, camera"):
        app.link("lidar")
    with pytest.raises(LinkError, match=r"input_topics names 'lidar', which no node publishes; known topics: boxes, "):
        app.resolve_topic("lidar", "viewer")
    assert app.resolve_topic("frames", "viewer") == "camera"
    assert app.resolve_topic("camera", "viewer") == "camera", "a node's name stands for its topic"
    with pytest.raises(LinkError, match="no node publishes"):
        app.resolve_topic("gateway", "viewer")


def test_a_topic_names_one_output_only() -> None:
    app = _app()
    with pytest.raises(NodeDefinitionError, match="topic 'boxes' is already the name or the topic of node 'detector'"):

        @app.node(name="tracker", type="consumer", output_topic="boxes")
        class Tracker(ConsumerNode):
            def process(self, data: Any) -> Any:
                return data

    with pytest.raises(NodeDefinitionError, match="topic 'camera' is already the name"):

        @app.node(name="mirror", type="producer", output_topic="camera")
        class Mirror(ProducerNode):
            def produce(self) -> Any:
                return b"x"

    with pytest.raises(NodeDefinitionError, match="output_topic 'bad topic!' is not valid"):

        @app.node(name="odd", type="producer", output_topic="bad topic!")
        class Odd(ProducerNode):
            def produce(self) -> Any:
                return b"x"
