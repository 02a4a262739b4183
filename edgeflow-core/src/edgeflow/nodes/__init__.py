"""The node classes a user subclasses."""

from __future__ import annotations

from .base import Node
from .consumer import ConsumerNode, SinkNode
from .fusion import FusionNode
from .gateway import GatewayInterface, GatewayNode
from .producer import IDLE, ProducerNode

__all__ = ["IDLE", "ConsumerNode", "FusionNode", "GatewayInterface", "GatewayNode", "Node", "ProducerNode", "SinkNode"]
