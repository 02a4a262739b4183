"""Errors of the ros2 plugin, in EdgeFlow's tree."""

from __future__ import annotations

from edgeflow.errors import BrokerError, ConfigurationError, FrameError

__all__ = ["DdsError", "MessageError", "Ros2ConfigurationError"]


class Ros2ConfigurationError(ConfigurationError):
    """Raised when a ROS 2 topic, message type, encoding, QoS or domain is set wrongly; fix the node or interface."""


class MessageError(FrameError):
    """Raised when a ROS 2 message is malformed, of an unsupported encoding, or can't be made from a frame."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(f"{topic}: {message}" if topic else message)
        self.topic = topic
        self.reason = message


class DdsError(BrokerError):
    """Raised when Cyclone DDS refuses an operation (creating a participant, writing a sample) at run time."""
