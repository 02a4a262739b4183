"""The ros2 plugin's registration, its cheap import, its settings checks and its counters (no ROS 2 side)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest

from edgeflow import ConfigurationError, EdgeApp, Frame, RedisBroker
from edgeflow.nodes import GatewayNode
from edgeflow.plugins import get_plugin_manager, registry
from edgeflow.testing import RunningApp
from edgeflow_ros2 import Ros2ConfigurationError, Ros2Interface, Ros2Source


def test_registered_as_the_ros2_interface() -> None:
    import edgeflow_ros2.plugin as plugin

    pm = get_plugin_manager()
    pm.register(plugin, name="ros2")
    try:
        assert registry("register_interfaces") == {"ros2": Ros2Interface}
    finally:
        pm.unregister(plugin)


def test_loading_the_plugin_does_not_import_cyclonedds() -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    code = (
        "import sys; from edgeflow.plugins import registry; import edgeflow_ros2; "
        "assert 'ros2' in registry('register_interfaces'); print(sorted(m for m in sys.modules if 'cyclonedds' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"topics": {"cam": "/camera//image"}}, "not a valid ROS 2 topic name"),
        ({"topics": {"cam": "/2cam"}}, "not a valid ROS 2 topic name"),
        ({"topics": {"cam": "/a", "b": "a"}}, "both map to /a"),
        ({"topics": {"cam": "/a"}, "encodings": {"cam": "yuv422"}}, "unknown encoding"),
        ({"topics": {"cam": "/a"}, "encodings": {"other": "bgr8"}}, "not in topics"),
        ({"topics": {"cam": "/a"}, "qos": "fast"}, "qos must be"),
        ({"topics": {"cam": "/a"}, "depth": 0}, "depth must be"),
        ({"topics": {"cam": "/a"}, "domain_id": 999}, "domain_id must be"),
        ({"topics": "cam"}, "topics must map"),
    ],
)
def test_interface_settings_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(Ros2ConfigurationError, match=match):
        Ros2Interface(**kwargs)


def test_bad_domain_and_unlinked_topics_fail_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "oops")
    with pytest.raises(Ros2ConfigurationError, match="ROS_DOMAIN_ID must be an integer"):
        Ros2Interface({"cam": "/cam"}).start()
    monkeypatch.undo()
    # What the gateway's runner sets before it starts its interfaces.
    gateway = GatewayNode()
    gateway.name, gateway.topics = "gw", ["cam"]
    iface = Ros2Interface({"cam": "/cam", "other": "/other"})
    gateway.add_interface(iface)
    with pytest.raises(Ros2ConfigurationError, match=r"\['other'\] are not linked into gateway 'gw'"):
        iface.start()


@pytest.mark.parametrize(
    ("settings", "replicas", "message"),
    [
        ({"topic": "/ok", "msg_type": "sensor_msgs/msg/PointCloud2"}, 1,
         "msg_type 'sensor_msgs/msg/PointCloud2' is not covered"),
        ({"topic": "/ok"}, 2, "'ros': a Ros2Source's replicas would each get every message"),
        ({}, 1, "'ros': a Ros2Source needs topic=..."),
    ],
)  # fmt: skip
def test_bad_source_settings_stop_the_app_with_a_clear_error(
    redis_url: str, app_name: str, settings: dict[str, Any], replicas: int, message: str
) -> None:
    """A mistake in the app is a ConfigurationError: the run stops and raises it (the process exits 2)."""
    app = EdgeApp(app_name, broker=RedisBroker(redis_url))

    @app.node(name="ros", type="producer", replicas=replicas, **settings)
    class Ros(Ros2Source):
        pass

    run = RunningApp(app).start()
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        run.wait(timeout=20)


def test_on_frame_counts_every_frame_from_many_threads() -> None:
    iface = Ros2Interface({"cam": "/counting/cam", "text": "/counting/text"})
    iface.start()
    img = np.zeros((48, 64, 3), np.uint8)
    try:

        def send(k: int) -> None:
            for i in range(500):
                iface.on_frame("cam", Frame(i, time.time(), {}, img))
                iface.on_frame("nobody-asked", Frame(i, time.time(), {}, img))

        threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        iface.on_frame("text", Frame(0, time.time(), {}, img))
        time.sleep(0.3)
        iface.on_frame("text", Frame(1, time.time(), {}, "a string on an Image topic"))
        time.sleep(0.3)
    finally:
        iface.stop()
    counts = iface.counters()
    cam = counts["cam"]
    assert cam["received"] == 2000
    assert cam["published"] + cam["unwatched"] + cam["dropped"] + cam["failed"] == 2000, cam
    assert counts["text"]["failed"] == 1, "a String frame can't go on a topic that carries Image"
    assert set(counts) == {"cam", "text"}, "topics not asked for are not bridged"
