"""The ROS 2 message types as Cyclone DDS IDL types: they name the DDS types and give Cyclone their layout.

They describe the topics (type name, XTypes type information, the layout Cyclone checks samples against);
samples themselves are written and read by `_cdr`, never through these classes' packers.
"""

# No `from __future__ import annotations`: cyclonedds reads these annotations as live types.
from dataclasses import dataclass

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t

from ._names import COMPRESSED_IMAGE, IMAGE, STRING, dds_type

__all__ = ["IDL_TYPES"]


@dataclass
class Time(IdlStruct, typename=dds_type("builtin_interfaces/msg/Time")):
    sec: t.int32
    nanosec: t.uint32


@dataclass
class Header(IdlStruct, typename=dds_type("std_msgs/msg/Header")):
    stamp: Time
    frame_id: str


@dataclass
class Image(IdlStruct, typename=dds_type(IMAGE)):
    header: Header
    height: t.uint32
    width: t.uint32
    encoding: str
    is_bigendian: t.uint8
    step: t.uint32
    data: t.sequence[t.uint8]


@dataclass
class CompressedImage(IdlStruct, typename=dds_type(COMPRESSED_IMAGE)):
    header: Header
    format: str
    data: t.sequence[t.uint8]


@dataclass
class String(IdlStruct, typename=dds_type(STRING)):
    data: str


#: ROS 2 message type -> its IDL type.
IDL_TYPES: dict[str, type[IdlStruct]] = {IMAGE: Image, COMPRESSED_IMAGE: CompressedImage, STRING: String}
