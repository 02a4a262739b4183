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
    assert app.broker.services(app) == [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT")]

    class Dual:
        @hookimpl
        def broker_services(self, broker: Any, app: Any) -> list[ServiceSpec]:
            return [ServiceSpec("redis", 6379, "REDIS_HOST", "REDIS_PORT"),
                    ServiceSpec("redis-data", 6380, "DATA_REDIS_HOST", "DATA_REDIS_PORT", role="data")]  # fmt: skip

    pm = get_plugin_manager()
    plugin = Dual()
    pm.register(plugin)
    try:
        assert [s.name for s in app.broker.services(app)] == ["redis", "redis-data"]
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
            "hooks": ["broker_services", "register_brokers"]} in info  # fmt: skip


def test_core_imports_with_no_plugin_installed() -> None:
    """The core must not import any plugin or its libraries (FastAPI, kubernetes) on its own."""
    code = (
        "import sys, edgeflow, edgeflow.comms, edgeflow.nodes, edgeflow.runner, edgeflow.cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'kubernetes', 'uvicorn', 'edgeflow_web', 'edgeflow_k8s', 'prometheus_client')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_plugins_raise_import_error_with_the_pip_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['edgeflow_web'] = None\n"
        "sys.modules['edgeflow_dualredis'] = None\n"
        "for stmt in ('from edgeflow.nodes.gateway.interfaces.web import WebInterface',"
        " 'from edgeflow.comms.brokers import DualRedisBroker'):\n"
        "    try:\n"
        "        exec(stmt)\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "edgeflow[web]"' in out
    assert 'pip install "edgeflow[dualredis]"' in out
