"""The plugin manager: built-in plugins plus those found through the `edgeflow` entry-point group."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "get_plugin_manager", "plugin_info", "registry", "reset"]

ENTRY_POINT_GROUP = "edgeflow"
DEFAULT_PLUGINS = ("edgeflow.brokers.redis", "edgeflow.codecs")

_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    wanted = os.environ.get("EDGEFLOW_LOAD_PLUGINS")
    names: list[str | None] = [None] if wanted is None else [n.strip() for n in wanted.split(",") if n.strip()]
    for name in names:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
        except Exception as exc:
            raise PluginError(
                f"an EdgeFlow plugin failed to import: {exc}; reinstall it, uninstall it, "
                "or limit loading with EDGEFLOW_LOAD_PLUGINS=name,name",
                plugin=name,
            ) from exc


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager, loading plugins on first use."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager("edgeflow")
            pm.add_hookspecs(hookspecs)
            for name in DEFAULT_PLUGINS:
                pm.register(importlib.import_module(name), name=name)
            if os.environ.get("EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD") != "1":
                _load_entry_points(pm)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"a plugin implements a hook that does not exist: {exc}") from exc
            _pm = pm
        return _pm


def reset() -> None:
    """Forget the plugin manager so the next use loads plugins again (for tests)."""
    global _pm
    with _lock:
        _pm = None


def registry(hook_name: str) -> dict[str, Any]:
    """Collect what the `register_*` hook called `hook_name` registers, by name."""
    found: dict[str, Any] = {}

    def register(name: str, obj: Any) -> None:
        if name in found and found[name] is not obj:
            raise PluginError(f"two plugins register a {hook_name.removeprefix('register_')} named {name!r}")
        found[name] = obj

    hook: Callable[..., Any] = getattr(get_plugin_manager().hook, hook_name)
    hook(register=register)
    return found


def plugin_info() -> list[dict[str, Any]]:
    """Describe each registered plugin: name, distribution, version and the hooks it implements."""
    pm = get_plugin_manager()
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        if dist is not None:
            dist_name, version = dist.project_name, dist.version
        else:
            dist_name, version = "edgeflow-core", metadata.version("edgeflow-core")
        out.append({"name": name, "distribution": dist_name, "version": version, "hooks": hooks})
    return out
