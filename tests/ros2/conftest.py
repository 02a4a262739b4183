"""DDS on loopback only, on a domain of this test run's own; the ROS 2 side runs as separate processes.

There is no ROS 2 installation here. What a ROS 2 node on rmw_cyclonedds_cpp puts on the wire is a Cyclone
DDS participant with ROS 2's topic names, type names and CDR; the "ROS 2 side" of these tests is exactly
that, written with cyclonedds-python's own IDL types (tests/ros2/ros_msgs.py), in processes of its own.

Linux's `lo` has no multicast, so `loopback_config()` makes Cyclone discover peers by unicast to 127.0.0.1
(participant indices, see edgeflow_ros2/_loopback.py). Each run takes a random ROS_DOMAIN_ID, so that two
test runs on one machine (or a real ROS 2 on the default domain 0) never see each other's topics.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from edgeflow.embedded import free_port
from edgeflow_ros2 import loopback_config


@pytest.fixture(scope="session", autouse=True)
def dds_loopback() -> Iterator[int]:
    """Set CYCLONEDDS_URI to loopback and ROS_DOMAIN_ID to this run's domain, for this process and its children."""
    saved = {k: os.environ.get(k) for k in ("CYCLONEDDS_URI", "ROS_DOMAIN_ID")}
    domain = random.SystemRandom().randint(1, 200)
    os.environ["CYCLONEDDS_URI"] = loopback_config()
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    yield domain
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _gateway_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TCP_PORT", str(free_port()))
