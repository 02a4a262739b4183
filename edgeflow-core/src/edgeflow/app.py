"""`EdgeApp`: the nodes of a pipeline, their links and the entry point that runs them."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .broker import Broker
from .config import settings
from .errors import LinkError, NodeDefinitionError, PluginError
from .links import Link, LinkBuilder
from .names import NAME
from .nodes import ConsumerNode, FusionNode, GatewayNode, ProducerNode, SinkNode
from .plugins import get_broker
from .resources import check_resources

__all__ = ["NODE_TYPES", "EdgeApp", "NodeSpec"]

NODE_TYPES = ("producer", "consumer", "fusion", "gateway", "sink")
_NAME = NAME
# Names the decorator owns; they can't also be node kwargs.
_RESERVED = {"name", "type", "replicas", "device", "app", "logger", "stats", "replica", "broker"}
# Node type -> the class to subclass and the method it must implement.
_BASES: dict[str, tuple[type, str | None]] = {
    "producer": (ProducerNode, "produce"),
    "consumer": (ConsumerNode, "process"),
    "fusion": (FusionNode, "process"),
    "gateway": (GatewayNode, None),
    "sink": (SinkNode, "process"),
}

N = TypeVar("N", bound=type)


@dataclass
class NodeSpec:
    """A node as declared with `@app.node`: its class and settings."""

    name: str
    type: str
    cls: builtins.type
    replicas: int = 1
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: Deployed, the node scales between `replicas` and this on the lag of its inputs (KEDA); None: fixed.
    max_replicas: int | None = None

    @property
    def topic(self) -> str:
        """The topic the node publishes under: `output_topic` from the decorator or the class, else its name."""
        declared = self.params.get("output_topic") or getattr(self.cls, "output_topic", None)
        return str(declared) if declared else self.name

    def describe(self) -> dict[str, Any]:
        """Return the node as a JSON-ready dict."""
        return {
            "name": self.name,
            "type": self.type,
            "device": self.device,
            "replicas": self.replicas,
            "topic": self.topic,
        }


class EdgeApp:
    """A pipeline: declare nodes with `@app.node`, wire them with `app.link`, start them with `app.run()`.

    `broker` is a Broker, or the name of a registered one ("redis", "shm", ...); by default the broker named by
    EDGEFLOW_BROKER, or "redis", built from the environment.
    """

    def __init__(self, name: str, broker: Broker | str | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise NodeDefinitionError(
                f"app name {name!r} is not valid: use letters, digits, '-', '_' or '.', starting with a letter"
            )
        if isinstance(broker, str):
            if "://" in broker:
                raise NodeDefinitionError(
                    f"broker must be a Broker or a registered broker's name; {broker!r} is a URL: pass "
                    f"RedisBroker({broker!r}), or set REDIS_URL"
                )
            broker = _broker_named(broker, "EdgeApp(broker=...)")
        if broker is not None and not isinstance(broker, Broker):
            raise NodeDefinitionError(
                f"broker must be an edgeflow Broker such as RedisBroker(), or a registered broker's name, "
                f"got {broker!r}"
            )
        self.name = name
        self._broker = broker
        self.nodes: dict[str, NodeSpec] = {}
        self.links: list[Link] = []

    @property
    def broker(self) -> Broker:
        """The app's broker; the one EDGEFLOW_BROKER names (default "redis"), from the environment, if none given."""
        if self._broker is None:
            self._broker = _broker_named(settings.EDGEFLOW_BROKER or "redis", "EDGEFLOW_BROKER")
        return self._broker

    def node(
        self,
        name: str,
        type: str,
        replicas: int = 1,
        device: str | None = None,
        max_replicas: int | None = None,
        **kwargs: Any,
    ) -> Callable[[N], N]:
        """Declare the decorated class as the node `name` of `type`; extra kwargs become instance attributes.

        `max_replicas` (consumers, sinks, fusion nodes): deployed, the node scales between `replicas` and
        `max_replicas` on the lag of its inputs (docs/scaling.md).
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise NodeDefinitionError(
                f"node name {name!r} is not valid: use letters, digits, '-', '_' or '.', starting with a letter",
                node=str(name),
            )
        if name in self.nodes:
            raise NodeDefinitionError(
                f"a node named {name!r} is already declared; node names must be unique", node=name
            )
        if type not in NODE_TYPES:
            raise NodeDefinitionError(f"node {name!r}: unknown type {type!r}; use one of {NODE_TYPES}", node=name)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise NodeDefinitionError(f"node {name!r}: replicas must be an int >= 1, got {replicas!r}", node=name)
        _check_max_replicas(name, type, replicas, max_replicas)
        if device is not None and (not isinstance(device, str) or not _NAME.match(device)):
            raise NodeDefinitionError(
                f"node {name!r}: device must be a label value like 'gpu', got {device!r}", node=name
            )
        clash = _RESERVED.intersection(kwargs)
        if clash:
            raise NodeDefinitionError(f"node {name!r}: {sorted(clash)} can't be node settings", node=name)
        if "resources" in kwargs:
            kwargs["resources"] = check_resources(name, kwargs["resources"])
        if type == "producer" and "fps" in kwargs:
            fps = kwargs["fps"]
            if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
                raise NodeDefinitionError(
                    f"node {name!r}: fps must be a positive number or None, got {fps!r}", node=name
                )

        def decorate(cls: N) -> N:
            base, method = _BASES[type]
            if not isinstance(cls, builtins.type) or not issubclass(cls, base):
                raise NodeDefinitionError(
                    f"node {name!r} is declared type={type!r}, so {getattr(cls, '__name__', cls)!r} must subclass "
                    f"{base.__name__}",
                    node=name,
                )
            if method is not None and getattr(cls, method) is getattr(base, method):
                raise NodeDefinitionError(f"node {name!r}: {cls.__name__} must implement {method}()", node=name)
            spec = NodeSpec(name, type, cls, replicas, device, dict(kwargs), max_replicas)
            self._check_topic(spec)
            self.nodes[name] = spec
            return cls

        return decorate

    def _check_topic(self, spec: NodeSpec) -> None:
        topic = spec.topic
        if not _NAME.match(topic):
            raise NodeDefinitionError(
                f"node {spec.name!r}: output_topic {topic!r} is not valid: use letters, digits, '-', '_' or '.', "
                "starting with a letter",
                node=spec.name,
            )
        for other in self.nodes.values():
            if topic in (other.topic, other.name) or spec.name == other.topic:
                raise NodeDefinitionError(
                    f"node {spec.name!r}: topic {topic!r} is already the name or the topic of node {other.name!r}; "
                    "every topic names one node's output",
                    node=spec.name,
                )

    def link(self, source: str) -> LinkBuilder:
        """Start a chain of links from the node `source` (or from the node that publishes the topic `source`)."""
        return LinkBuilder(self, source)

    # Graph queries -----------------------------------------------------------------------------------
    def require_node(self, name: str, what: str) -> None:
        """Raise LinkError, naming the known nodes, when there is no node `name`."""
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes)) or "none yet"
            raise LinkError(f"can't {what} {name!r}: no node of that name. Known nodes: {known}")

    def topics(self) -> dict[str, str]:
        """Return each topic and the node that publishes it."""
        return {spec.topic: name for name, spec in self.nodes.items() if spec.type not in ("gateway", "sink")}

    def resolve_source(self, name: str) -> str:
        """Return the node that publishes `name`: a node's name or its topic; LinkError names the known ones."""
        if name in self.nodes:
            return name
        node = self.topics().get(name)
        if node is None:
            known = ", ".join(sorted(set(self.nodes) | set(self.topics()))) or "none yet"
            raise LinkError(f"can't link {name!r}: no node or topic of that name. Known nodes and topics: {known}")
        return node

    def resolve_topic(self, topic: str, reader: str) -> str:
        """Return the node publishing `topic`, for `reader`'s `input_topics`; LinkError names the known topics."""
        node = self.topics().get(topic)
        if node is None and topic in self.nodes and self.nodes[topic].type not in ("gateway", "sink"):
            node = topic  # a node's name stands for its topic, as in app.link()
        if node is None:
            known = ", ".join(sorted(self.topics())) or "none"
            raise LinkError(
                f"node {reader!r}: input_topics names {topic!r}, which no node publishes; known topics: {known}",
                source=topic,
                target=reader,
            )
        return node

    def path(self, start: str, goal: str) -> list[str] | None:
        """Return a path of links from `start` to `goal`, or None."""
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            if node == goal:
                return path
            if node in seen:
                continue
            seen.add(node)
            stack.extend((ln.target, [*path, ln.target]) for ln in self.links if ln.source == node)
        return None

    def links_from(self, name: str) -> list[Link]:
        """Return the links whose source is `name`, in the order they were made."""
        return [ln for ln in self.links if ln.source == name]

    def links_into(self, name: str) -> list[Link]:
        """Return the links whose target is `name`, in the order they were made."""
        return [ln for ln in self.links if ln.target == name]

    def describe(self) -> dict[str, Any]:
        """Return the app's nodes and links as a JSON-ready dict."""
        return {
            "app": self.name,
            "nodes": [spec.describe() for spec in self.nodes.values()],
            "links": [ln.describe() for ln in self.links],
        }

    def run(self, argv: Sequence[str] | None = None) -> None:
        """Run every node in this process, or the one named by `--node NAME`; `--list` prints the graph."""
        # The one upward import of the core: the seed's API puts run() on the app.
        from .runtime.runner import main

        main(self, argv)


def _check_max_replicas(name: str, type: str, replicas: int, max_replicas: int | None) -> None:
    if max_replicas is None:
        return
    if type not in ("consumer", "sink", "fusion"):
        raise NodeDefinitionError(
            f"node {name!r}: max_replicas scales a node on the lag of its inputs; a {type} has none (only consumers, "
            "sinks and fusion nodes scale): drop max_replicas",
            node=name,
        )
    if not isinstance(max_replicas, int) or isinstance(max_replicas, bool) or max_replicas < replicas:
        raise NodeDefinitionError(
            f"node {name!r}: max_replicas must be an int >= replicas ({replicas}), got {max_replicas!r}", node=name
        )


def _broker_named(name: str, where: str) -> Broker:
    try:
        cls = get_broker(name)
    except PluginError as exc:
        raise PluginError(f"{where}: {exc}", kind="broker", name=name) from exc
    return cls()
