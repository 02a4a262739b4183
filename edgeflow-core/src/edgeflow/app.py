"""`EdgeApp`: the nodes of a pipeline, their links and the entry point that runs them."""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .broker import Broker
from .errors import LinkError, NodeDefinitionError
from .linker import Link, LinkBuilder

__all__ = ["NODE_TYPES", "EdgeApp", "NodeSpec"]

NODE_TYPES = ("producer", "consumer", "fusion", "gateway", "sink")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
# Names the decorator owns; they can't also be node kwargs.
_RESERVED = {"name", "type", "replicas", "device", "app", "logger", "stats", "replica", "broker"}

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

    def describe(self) -> dict[str, Any]:
        """Return the node as a JSON-ready dict."""
        return {"name": self.name, "type": self.type, "device": self.device, "replicas": self.replicas}


def _base_for(node_type: str) -> tuple[type, str | None]:
    from .nodes import ConsumerNode, FusionNode, GatewayNode, ProducerNode, SinkNode

    return {
        "producer": (ProducerNode, "produce"),
        "consumer": (ConsumerNode, "process"),
        "fusion": (FusionNode, "process"),
        "gateway": (GatewayNode, None),
        "sink": (SinkNode, "process"),
    }[node_type]


class EdgeApp:
    """A pipeline: declare nodes with `@app.node`, wire them with `app.link`, start them with `app.run()`."""

    def __init__(self, name: str, broker: Broker | None = None) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise NodeDefinitionError(
                f"app name {name!r} is not valid: use letters, digits, '-', '_' or '.', starting with a letter"
            )
        if broker is not None and not isinstance(broker, Broker):
            raise NodeDefinitionError(f"broker must be an edgeflow Broker such as RedisBroker(), got {broker!r}")
        self.name = name
        self._broker = broker
        self.nodes: dict[str, NodeSpec] = {}
        self.links: list[Link] = []

    @property
    def broker(self) -> Broker:
        """The app's broker; a RedisBroker from the environment when none was given."""
        if self._broker is None:
            from .brokers.redis import RedisBroker

            self._broker = RedisBroker()
        return self._broker

    def node(
        self,
        name: str,
        type: str,
        replicas: int = 1,
        device: str | None = None,
        **kwargs: Any,
    ) -> Callable[[N], N]:
        """Declare the decorated class as the node `name` of `type`; extra kwargs become instance attributes."""
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
        if device is not None and (not isinstance(device, str) or not _NAME.match(device)):
            raise NodeDefinitionError(
                f"node {name!r}: device must be a label value like 'gpu', got {device!r}", node=name
            )
        clash = _RESERVED.intersection(kwargs)
        if clash:
            raise NodeDefinitionError(f"node {name!r}: {sorted(clash)} can't be node settings", node=name)
        if type == "producer" and "fps" in kwargs:
            fps = kwargs["fps"]
            if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0):
                raise NodeDefinitionError(
                    f"node {name!r}: fps must be a positive number or None, got {fps!r}", node=name
                )

        def decorate(cls: N) -> N:
            base, method = _base_for(type)
            if not isinstance(cls, builtins.type) or not issubclass(cls, base):
                raise NodeDefinitionError(
                    f"node {name!r} is declared type={type!r}, so {getattr(cls, '__name__', cls)!r} must subclass "
                    f"{base.__name__}",
                    node=name,
                )
            if method is not None and getattr(cls, method) is getattr(base, method):
                raise NodeDefinitionError(f"node {name!r}: {cls.__name__} must implement {method}()", node=name)
            self.nodes[name] = NodeSpec(name, type, cls, replicas, device, dict(kwargs))
            return cls

        return decorate

    def link(self, source: str) -> LinkBuilder:
        """Start a chain of links from the node `source`."""
        return LinkBuilder(self, source)

    # Graph queries -----------------------------------------------------------------------------------
    def _require_node(self, name: str, what: str) -> None:
        if name not in self.nodes:
            known = ", ".join(sorted(self.nodes)) or "none yet"
            raise LinkError(f"can't {what} {name!r}: no node of that name. Known nodes: {known}")

    def _path(self, start: str, goal: str) -> list[str] | None:
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
        from .runner import main

        main(self, argv)
