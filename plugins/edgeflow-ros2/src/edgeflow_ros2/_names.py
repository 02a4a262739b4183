"""ROS 2 names as they appear on DDS (what rmw_cyclonedds_cpp does), checked before anything is created.

A ROS 2 topic `/camera/image_raw` is the DDS topic `rt/camera/image_raw`; the message type
`sensor_msgs/msg/Image` is the DDS type `sensor_msgs::msg::dds_::Image_`; the domain is `ROS_DOMAIN_ID`.
"""

from __future__ import annotations

import os
import re

from .errors import Ros2ConfigurationError

__all__ = [
    "COMPRESSED_IMAGE",
    "IMAGE",
    "MSG_TYPES",
    "QOS_NAMES",
    "STRING",
    "check_depth",
    "check_msg_type",
    "check_qos",
    "dds_topic",
    "dds_type",
    "domain_id",
    "ros_topic",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
STRING = "std_msgs/msg/String"
MSG_TYPES = (IMAGE, COMPRESSED_IMAGE, STRING)
QOS_NAMES = ("realtime", "durable")
# Every DDS topic that carries ROS 2 messages ("ROS topic") starts with this prefix (rt/, rq/ and rr/ are services).
_TOPIC_PREFIX = "rt"
# A token is what lies between slashes: letters, digits and underscores, not starting with a digit.
_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_TOPIC_LEN = 255
# DDS maps a domain to UDP ports 7400 + 250 * domain + ...; above 232 they leave the 16-bit range.
_MAX_DOMAIN = 232


def ros_topic(name: str, what: str = "topic") -> str:
    """Return the fully qualified ROS 2 name of `name` ("cam" -> "/cam"); raise when ROS 2 would refuse it."""
    if not isinstance(name, str) or not name:
        raise Ros2ConfigurationError(f"{what} must be a non-empty string such as '/camera/image_raw', got {name!r}")
    full = name if name.startswith("/") else "/" + name
    tokens = full[1:].split("/")
    if len(full) > _MAX_TOPIC_LEN or not all(_TOKEN.match(t) for t in tokens):
        raise Ros2ConfigurationError(
            f"{what} {name!r} is not a valid ROS 2 topic name: use tokens of letters, digits and '_' (not starting "
            "with a digit) separated by single '/', without a trailing '/', e.g. '/camera/image_raw'"
        )
    return full


def dds_topic(name: str) -> str:
    """Return the DDS topic name of the ROS 2 topic `name`: `rt/camera/image_raw`."""
    return _TOPIC_PREFIX + ros_topic(name)


def dds_type(msg_type: str) -> str:
    """Return the DDS type name of a ROS 2 message type: `sensor_msgs/msg/Image` -> `sensor_msgs::msg::dds_::Image_`."""
    package, kind, name = msg_type.split("/")
    return f"{package}::{kind}::dds_::{name}_"


def check_msg_type(msg_type: object) -> str:
    """Return `msg_type` when this plugin covers it; raise naming the covered ones otherwise."""
    if msg_type not in MSG_TYPES:
        raise Ros2ConfigurationError(f"msg_type {msg_type!r} is not covered; use one of {', '.join(MSG_TYPES)}")
    assert isinstance(msg_type, str)
    return msg_type


def check_qos(qos: object, what: str) -> str:
    """Return `qos` when it is "realtime" or "durable"."""
    if qos not in QOS_NAMES:
        raise Ros2ConfigurationError(f"{what}: qos must be 'realtime' or 'durable', got {qos!r}")
    assert isinstance(qos, str)
    return qos


def check_depth(depth: object, what: str) -> int | None:
    """Return `depth` when it is None or an int from 1 to 1000."""
    if depth is None:
        return None
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 1000:
        raise Ros2ConfigurationError(f"{what}: depth must be an int from 1 to 1000 or None, got {depth!r}")
    return depth


def domain_id(explicit: int | None = None) -> int:
    """Return the DDS domain: `explicit`, else `ROS_DOMAIN_ID`, else 0 (as ROS 2 does)."""
    raw: object = explicit if explicit is not None else os.environ.get("ROS_DOMAIN_ID", "").strip() or 0
    try:
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        value = -1
    if isinstance(raw, bool) or not 0 <= value <= _MAX_DOMAIN:
        source = "domain_id" if explicit is not None else "ROS_DOMAIN_ID"
        raise Ros2ConfigurationError(f"{source} must be an integer from 0 to {_MAX_DOMAIN}, got {raw!r}")
    return value
