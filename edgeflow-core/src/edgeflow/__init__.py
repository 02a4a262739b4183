"""EdgeFlow: distributed data-processing pipelines on Redis."""

from __future__ import annotations

from . import codecs as _codecs
from . import plugins as _plugins
from .app import EdgeApp, NodeSpec
from .broker import Broker, ServiceSpec
from .brokers.redis import RedisBroker
from .brokers.redis import plugin as _redis_plugin
from .config import settings
from .errors import (
    BackpressureError,
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    ConfigurationError,
    DiskFullError,
    EdgeFlowError,
    FrameError,
    LinkError,
    NodeDefinitionError,
    NodeError,
    PluginError,
    SinkError,
    UnstorableFrameError,
)
from .frame import Frame
from .hookspecs import hookimpl
from .nodes import IDLE, ConsumerNode, FusionNode, GatewayInterface, GatewayNode, ProducerNode, SinkNode
from .sinks import FileSink, SQLiteSink
from .sinks import plugin as _sinks_plugin

__version__ = "0.1.0"

# The core's own pieces register through the same hooks as any plugin (datasette's default plugins). They are
# handed to the plugin manager here, at the top, so that the manager itself imports nothing above it.
_plugins.add_builtin("edgeflow.brokers.redis", _redis_plugin)
_plugins.add_builtin("edgeflow.codecs", _codecs)
_plugins.add_builtin("edgeflow.sinks", _sinks_plugin)

__all__ = [
    "IDLE",
    "BackpressureError",
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerTimeoutError",
    "ConfigurationError",
    "ConsumerNode",
    "DiskFullError",
    "EdgeApp",
    "EdgeFlowError",
    "FileSink",
    "Frame",
    "FrameError",
    "FusionNode",
    "GatewayInterface",
    "GatewayNode",
    "LinkError",
    "NodeDefinitionError",
    "NodeError",
    "NodeSpec",
    "PluginError",
    "ProducerNode",
    "RedisBroker",
    "SQLiteSink",
    "ServiceSpec",
    "SinkError",
    "SinkNode",
    "UnstorableFrameError",
    "hookimpl",
    "settings",
]
