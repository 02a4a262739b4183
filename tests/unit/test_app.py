"""`EdgeApp`, `@app.node` and `app.link`: every developer mistake is a clear error at once."""

from __future__ import annotations

import pytest

from edgeflow import EdgeApp
from edgeflow.errors import ConfigurationError, LinkError, NodeDefinitionError
from edgeflow.nodes import ConsumerNode, FusionNode, GatewayNode, ProducerNode, SinkNode


def make_app() -> EdgeApp:
    app = EdgeApp("unit")

    @app.node(name="cam", type="producer", fps=30, device="camera")
    class Cam(ProducerNode):
        def produce(self) -> bytes:
            return b""

    @app.node(name="det", type="consumer", replicas=2, device="gpu")
    class Det(ConsumerNode):
        def process(self, data: object) -> object:
            return data

    @app.node(name="log", type="sink")
    class Log(SinkNode):
        def process(self, data: object) -> None:
            pass

    @app.node(name="gw", type="gateway", node_port=30080)
    class Gw(GatewayNode):
        pass

    return app


def test_node_kwargs_are_kept_and_described() -> None:
    app = make_app()
    assert app.nodes["cam"].params == {"fps": 30}
    assert app.nodes["gw"].params == {"node_port": 30080}
    assert app.nodes["det"].replicas == 2
    assert app.describe()["nodes"][1] == {"name": "det", "type": "consumer", "device": "gpu", "replicas": 2,
                                          "topic": "det"}  # fmt: skip


def test_duplicate_name_is_an_error() -> None:
    app = make_app()
    with pytest.raises(NodeDefinitionError, match="'cam' is already declared"):

        @app.node(name="cam", type="producer")
        class Again(ProducerNode):
            def produce(self) -> bytes:
                return b""


def test_unknown_type_names_the_valid_ones() -> None:
    with pytest.raises(NodeDefinitionError, match=r"unknown type 'camera'.*producer"):
        make_app().node(name="x", type="camera")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name", "type": "producer"}, "not valid"),
        ({"name": "x", "type": "consumer", "replicas": 0}, "replicas must be an int >= 1"),
        ({"name": "x", "type": "producer", "fps": -1}, "fps must be a positive number"),
        ({"name": "x", "type": "consumer", "device": "gpu 0"}, "device must be a label value"),
    ],
)
def test_bad_node_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(NodeDefinitionError, match=message):
        make_app().node(**kwargs)  # type: ignore[arg-type]


def test_class_that_does_not_fit_its_type() -> None:
    app = make_app()
    with pytest.raises(NodeDefinitionError, match=r"type='producer'.*must subclass ProducerNode"):

        @app.node(name="p", type="producer")
        class NotAProducer(ConsumerNode):
            def process(self, data: object) -> object:
                return data


def test_class_missing_its_method() -> None:
    app = make_app()
    with pytest.raises(NodeDefinitionError, match=r"must implement process\(\)"):

        @app.node(name="f", type="fusion")
        class Lazy(FusionNode):
            pass


def test_link_chain_and_fan_out() -> None:
    app = make_app()
    app.link("cam").to("det").to("gw")
    app.link("cam").to("gw")
    app.link("cam").to("log", qos="durable")
    assert [(ln.source, ln.target, ln.transport, ln.qos) for ln in app.links] == [
        ("cam", "det", "redis", "realtime"),
        ("det", "gw", "tcp", "realtime"),
        ("cam", "gw", "tcp", "realtime"),
        ("cam", "log", "redis", "durable"),
    ]
    assert [ln.target for ln in app.links_from("cam")] == ["det", "gw", "log"]


def test_unknown_node_lists_known_ones() -> None:
    app = make_app()
    with pytest.raises(LinkError, match=r"no node of that name\. Known nodes: cam, det, gw, log"):
        app.link("cam").to("detector")
    with pytest.raises(LinkError, match="'camera'"):
        app.link("camera")


def test_cycle_is_named() -> None:
    app = EdgeApp("cyc")
    for name in ("a", "b", "c"):

        @app.node(name=name, type="consumer")
        class C(ConsumerNode):
            def process(self, data: object) -> object:
                return data

    app.link("a").to("b").to("c")
    with pytest.raises(LinkError, match="makes a cycle: c -> a -> b -> c"):
        app.link("c").to("a")
    with pytest.raises(LinkError, match="cycle: a -> a"):
        app.link("a").to("a")


@pytest.mark.parametrize(
    ("source", "target", "kwargs", "message"),
    [
        ("gw", "det", {}, "a gateway node has no output"),
        ("log", "det", {}, "a sink node has no output"),
        ("det", "cam", {}, "a producer node takes no input"),
        ("cam", "det", {"qos": "best-effort"}, "unknown qos"),
        ("cam", "gw", {"qos": "durable"}, "links into a gateway are realtime"),
        ("cam", "det", {"depth": 0}, "depth must be"),
    ],
)
def test_incompatible_links(source: str, target: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LinkError, match=message):
        make_app().link(source).to(target, **kwargs)  # type: ignore[arg-type]


def test_relinking_with_another_qos_is_an_error_but_the_same_link_is_idempotent() -> None:
    app = make_app()
    app.link("cam").to("det")
    app.link("cam").to("det")
    assert len(app.links) == 1
    with pytest.raises(LinkError, match="already linked"):
        app.link("cam").to("det", qos="durable")


def test_errors_share_one_root() -> None:
    assert issubclass(LinkError, ConfigurationError)
    assert issubclass(NodeDefinitionError, ConfigurationError)


def test_bad_app_name_and_broker() -> None:
    with pytest.raises(NodeDefinitionError, match="app name"):
        EdgeApp("")
    with pytest.raises(NodeDefinitionError, match="broker must be"):
        EdgeApp("ok", broker="redis://localhost")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("det", {"codec": "webp"}, r"no codec named 'webp' is installed \(installed codecs: jpeg\)"),
        ("det", {"codec": "jpeg", "quality": 101}, "quality must be an int from 1 to 100"),
        ("gw", {"codec": "jpeg"}, "a gateway gets frames raw"),
    ],
)
def test_bad_link_codecs(target: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LinkError, match=message):
        make_app().link("cam").to(target, **kwargs)  # type: ignore[arg-type]


def test_codec_links_describe_their_encoding() -> None:
    app = make_app()
    app.link("cam").to("det", codec="jpeg", quality=70)
    app.link("cam").to("log")
    assert [ln.variant for ln in app.links] == ["jpeg70", ""]
    assert app.describe()["links"][0]["codec"] == "jpeg70"
