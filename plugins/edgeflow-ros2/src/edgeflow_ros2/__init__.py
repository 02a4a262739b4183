"""EdgeFlow ROS 2 plugin: EdgeFlow topics published to ROS 2 (`Ros2Interface`), ROS 2 topics read in (`Ros2Source`).

It speaks ROS 2's DDS conventions (topic `rt/<name>`, type `sensor_msgs::msg::dds_::Image_`, XCDR1,
`ROS_DOMAIN_ID`) through Cyclone DDS, the middleware behind rmw_cyclonedds_cpp, so a ROS 2 node sees its
topics as another node's. Importing this package does not import Cyclone DDS; starting an interface or a
source does.
"""

from __future__ import annotations

from ._loopback import loopback_config
from .errors import DdsError, MessageError, Ros2ConfigurationError
from .interface import Ros2Interface
from .source import Ros2Source

__all__ = ["DdsError", "MessageError", "Ros2ConfigurationError", "Ros2Interface", "Ros2Source", "loopback_config"]
