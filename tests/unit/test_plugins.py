"""The plugin manager: built-ins register through the same hooks, inline plugins join and leave cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from edgeflow import EdgeApp, RedisBroker, ServiceSpec, hookimpl
from edgeflow.errors import PluginError
from edgeflow.plugins import get_plugin_manager, plugin_info, registry


def test_builtin_redis_broker_registers_through_the_hook() -> None:
    assert registry("register_brokers") == {"redis": RedisBroker}
    names = [p["name"] for p in plugin_info()]
    assert "edgeflow.brokers.redis" in names


def test_inline_plugin_adds_an_interface_and_is_removed() -> None:
    class Shout:
        pass

    class Plugin:
        @hookimpl
        def register_interfaces(self, register: Any) -> None:
            register("shout", Shout)

    pm = get_plugin_manager()
    plugin = Plugin()
    pm.register(plugin, name="shout-plugin")
    try:
        assert registry("register_interfaces") == {"shout": Shout}
        info = {p["name"]: p for p in plugin_info()}
        assert info["shout-plugin"]["hooks"] == ["register_interfaces"]
    finally:
        pm.unregister(plugin)
    assert registry("register_interfaces") == {}


def test_two_plugins_claiming_one_name_is_an_error() -> None:
    class A:
        @hookimpl
        def register_brokers(self, register: Any) -> None:
            register("redis", object)

    pm = get_plugin_manager()
    a = A()
    pm.register(a)
    try:
        with pytest.raises(PluginError, match="named 'redis'"):
            registry("register_brokers")
    finally:
        pm.unregister(a)


def test_broker_services_default_and_plugin_answer() -> None:
    app = EdgeApp("svc")
    assert get_plugin_manager().hook.broker_services(broker=app.broker, app=app) == [
        ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")
    ]

    class Dual:
        @hookimpl
        def broker_services(self, broker: Any, app: Any) -> list[ServiceSpec]:
            return [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT"),
                    ServiceSpec("redis-data", 6380, "DATA_REDIS_HOST", "DATA_REDIS_PORT", role="data")]  # fmt: skip

    pm = get_plugin_manager()
    plugin = Dual()
    pm.register(plugin)
    try:
        assert [s.name for s in get_plugin_manager().hook.broker_services(broker=app.broker, app=app)] == [
            "redis",
            "redis-data",
        ]
    finally:
        pm.unregister(plugin)


def test_misspelt_hook_is_caught() -> None:
    import pluggy

    class Typo:
        @hookimpl
        def register_broker(self, register: Any) -> None:  # missing "s"
            pass

    pm = get_plugin_manager()
    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_edgeflow_plugins_command_lists_the_builtin() -> None:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", "plugins", "--json"], capture_output=True, text=True, env=env, check=True
    ).stdout
    info = json.loads(out)
    assert {"name": "edgeflow.brokers.redis", "distribution": "edgeflow-core", "version": "0.1.0",
            "hooks": ["broker_services", "register_brokers"], "provides": {"broker": ["redis"]}} in info  # fmt: skip
    assert {"name": "edgeflow.codecs", "distribution": "edgeflow-core", "version": "0.1.0",
            "hooks": ["register_codecs"], "provides": {"codec": ["jpeg"]}} in info  # fmt: skip
    text = subprocess.run([sys.executable, "-m", "edgeflow.cli", "plugins"], capture_output=True, text=True, env=env,
                          check=True).stdout  # fmt: skip
    assert "    broker     redis" in text and "    codec      jpeg" in text, text


def test_core_imports_with_no_plugin_installed() -> None:
    """The core must not import any plugin or its libraries (FastAPI, kubernetes) on its own."""
    code = (
        "import sys, edgeflow, edgeflow.comms, edgeflow.nodes, edgeflow.runtime, edgeflow.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'kubernetes', 'uvicorn', 'edgeflow_web', 'edgeflow_k8s', 'prometheus_client')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_plugins_left_out_by_edgeflow_load_plugins_are_named_in_the_error() -> None:
    """With entry points loaded but limited by EDGEFLOW_LOAD_PLUGINS, the seed's paths say what limits them.

    The case of a plugin that is not installed at all runs in a fresh venv: tests/packaging/test_fresh_venv.py.
    """
    code = (
        "import edgeflow\n"
        "for stmt in ('from edgeflow.nodes.gateway.interfaces.web import WebInterface',"
        " 'from edgeflow.comms.brokers import DualRedisBroker'):\n"
        "    try:\n"
        "        exec(stmt)\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    env["EDGEFLOW_LOAD_PLUGINS"] = "shm"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert "no interface named 'web' is installed (installed interfaces: none)" in lines[0]
    assert "no broker named 'dualredis' is installed (installed brokers: redis, shm)" in lines[1]
    assert all("EDGEFLOW_LOAD_PLUGINS='shm' limits which plugins load" in line for line in lines)
