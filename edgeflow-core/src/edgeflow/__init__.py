"""EdgeFlow: distributed data-processing pipelines on Redis."""

from __future__ import annotations

from .app import EdgeApp, NodeSpec
from .broker import Broker, ServiceSpec
from .brokers.redis import RedisBroker
from .config import settings
from .errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    ConfigurationError,
    EdgeFlowError,
    FrameError,
    LinkError,
    NodeDefinitionError,
    NodeError,
    PluginError,
)
from .frame import Frame
from .hookspecs import hookimpl
from .nodes import ConsumerNode, FusionNode, GatewayInterface, GatewayNode, ProducerNode, SinkNode

__version__ = "0.1.0"

__all__ = [
    "Broker",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerTimeoutError",
    "ConfigurationError",
    "ConsumerNode",
    "EdgeApp",
    "EdgeFlowError",
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
    "ServiceSpec",
    "SinkNode",
    "hookimpl",
    "settings",
]
