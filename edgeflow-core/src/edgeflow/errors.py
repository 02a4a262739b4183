"""The EdgeFlow error tree: one root, developer mistakes apart from runtime failures."""

from __future__ import annotations

__all__ = [
    "BackpressureError",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerTimeoutError",
    "ConfigurationError",
    "DiskFullError",
    "EdgeFlowError",
    "FrameError",
    "LinkError",
    "NodeDefinitionError",
    "NodeError",
    "PluginError",
    "SinkError",
    "UnstorableFrameError",
]


class EdgeFlowError(Exception):
    """Raised for every error that EdgeFlow itself reports."""


class ConfigurationError(EdgeFlowError):
    """Raised when the application is defined or configured wrongly; fix the code or the environment."""


class NodeDefinitionError(ConfigurationError):
    """Raised when `@app.node` is given a bad name, type or class."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class LinkError(ConfigurationError):
    """Raised when `app.link(...).to(...)` names unknown nodes, forms a cycle or links incompatible types."""

    def __init__(self, message: str, *, source: str | None = None, target: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.target = target


class PluginError(ConfigurationError):
    """Raised when a plugin fails to load, misspells a hook, or a required plugin is missing."""

    def __init__(
        self, message: str, *, plugin: str | None = None, kind: str | None = None, name: str | None = None
    ) -> None:
        super().__init__(message)
        self.plugin = plugin
        #: The kind of piece looked up (broker, interface, deployer, exporter, codec) and its name.
        self.kind = kind
        self.name = name


class BrokerError(EdgeFlowError):
    """Raised when the broker fails at run time."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class BrokerConnectionError(BrokerError):
    """Raised when the broker's server can't be reached; EdgeFlow retries with backoff before raising it."""


class BackpressureError(BrokerError):
    """Raised when a durable link holds its maximum of unacknowledged frames; the producer waits and retries."""


class BrokerTimeoutError(BrokerError):
    """Raised when the broker's server does not answer in time."""


class NodeError(EdgeFlowError):
    """Raised when a node fails at run time, for example when `produce()` returns a type EdgeFlow can't send."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class FrameError(EdgeFlowError):
    """Raised when a frame can't be encoded, or a buffer is not a valid, complete EdgeFlow frame."""


class SinkError(NodeError):
    """Raised when a sink can't store a frame or make its writes durable; `path` is where it writes."""

    def __init__(self, message: str, *, node: str | None = None, path: str | None = None) -> None:
        super().__init__(message, node=node)
        self.path = path


class UnstorableFrameError(SinkError):
    """Raised by a sink's `process()` for a frame it can't store; the frame goes to the dead letters with it."""


class DiskFullError(SinkError):
    """Raised when the disk a sink writes to is full or over a size limit; frames wait unacknowledged meanwhile."""
