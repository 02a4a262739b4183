"""The ROS 2 messages as a ROS 2 node on Cyclone DDS sees them, declared with cyclonedds' own IDL types.

This is the independent side of the tests: written from the ROS 2 message definitions
(sensor_msgs/msg/Image.msg, CompressedImage.msg, std_msgs/msg/String.msg, Header.msg,
builtin_interfaces/msg/Time.msg) and the rosidl naming (`pkg::msg::dds_::Name_`), without any of the
plugin's code, and (de)serialized by cyclonedds-python's own machinery.
"""

# No `from __future__ import annotations`: cyclonedds reads these annotations as live types.
from dataclasses import dataclass

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32
    nanosec: t.uint32


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header
    height: t.uint32
    width: t.uint32
    encoding: str
    is_bigendian: t.uint8
    step: t.uint32
    data: t.sequence[t.uint8]


@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header
    format: str
    data: t.sequence[t.uint8]


@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str


TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CompressedImage": CompressedImage,
    "std_msgs/msg/String": String,
}
