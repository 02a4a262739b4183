"""The plugin manager, and the lookups that find every kind of piece by name.

Plugins come from the `edgeflow` entry-point group; the core's own pieces (the Redis broker, the JPEG codec)
register through the same hooks, handed in by the package root (`add_builtin`), so that this module, low in the
core, imports nothing above it. Lookups are cached until a plugin joins or leaves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError

if TYPE_CHECKING:
    from .broker import Broker
    from .codecs import Codec
    from .nodes import GatewayInterface, SinkNode

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "add_builtin",
    "get_broker",
    "get_codec",
    "get_deployer",
    "get_exporter",
    "get_interface",
    "get_plugin_manager",
    "get_sink",
    "install_hint",
    "installed",
    "lookup",
    "plugin_info",
    "registry",
    "reset",
]

ENTRY_POINT_GROUP = "edgeflow"
#: Each kind of piece a plugin can add, and the hook that registers it.
KINDS: dict[str, str] = {
    "broker": "register_brokers",
    "interface": "register_interfaces",
    "deployer": "register_deployers",
    "exporter": "register_metrics",
    "codec": "register_codecs",
    "sink": "register_sinks",
}

_lock = threading.RLock()
_pm: _Manager | None = None
_builtins: dict[str, object] = {}
_cache: dict[tuple[int, str], dict[str, Any]] = {}


class _Manager(pluggy.PluginManager):
    """pluggy's manager, counting registrations so that cached lookups notice a plugin joining or leaving."""

    generation = 0

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self.generation += 1
        return super().register(plugin, name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self.generation += 1
        return super().unregister(plugin, name)


def add_builtin(name: str, plugin: object) -> None:
    """Register one of the core's own plugin modules; the package root calls this for each built-in piece."""
    with _lock:
        _builtins[name] = plugin
        if _pm is not None and _pm.get_plugin(name) is None:
            _pm.register(plugin, name=name)


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
            pm = _Manager("edgeflow")
            pm.add_hookspecs(hookspecs)
            for name, plugin in _builtins.items():
                pm.register(plugin, name=name)
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
        _cache.clear()


def _collect(impls: list[Any], what: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Call each implementation of a register hook; return what it registered by name, and who gave which names."""
    found: dict[str, Any] = {}
    by_plugin: dict[str, list[str]] = {}
    for impl in impls:

        def register(name: str, obj: Any, _plugin: str = impl.plugin_name) -> None:
            if name in found and found[name] is not obj:
                raise PluginError(f"two plugins register a {what} named {name!r}", plugin=_plugin, name=name)
            found[name] = obj
            by_plugin.setdefault(_plugin, []).append(name)

        impl.function(register=register)
    return found, by_plugin


def registry(hook_name: str) -> dict[str, Any]:
    """Collect what the `register_*` hook called `hook_name` registers, by name (cached)."""
    pm = get_plugin_manager()
    assert isinstance(pm, _Manager)
    key = (pm.generation, hook_name)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return dict(cached)
    hook: Any = getattr(pm.hook, hook_name)
    found, _ = _collect(hook.get_hookimpls(), hook_name.removeprefix("register_").rstrip("s"))
    with _lock:
        _cache[key] = found
    return dict(found)


def installed(kind: str) -> dict[str, Any]:
    """Return every registered piece of `kind` (broker, interface, deployer, exporter, codec, sink) by name."""
    if kind not in KINDS:
        raise PluginError(f"unknown kind of plugin piece {kind!r}; the kinds are {sorted(KINDS)}", kind=kind)
    return registry(KINDS[kind])


def install_hint(kind: str, name: str) -> str:
    """Say how to get the missing `kind` called `name`: the pip extra named after it, or why it is not loaded."""
    if os.environ.get("EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD") == "1":
        return (
            "plugins are not loaded from entry points in this process (EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD=1); "
            "unset it, or register the plugin with get_plugin_manager().register(module)"
        )
    wanted = os.environ.get("EDGEFLOW_LOAD_PLUGINS")
    if wanted is not None:
        return f"EDGEFLOW_LOAD_PLUGINS={wanted!r} limits which plugins load; add the one that provides {name!r}"
    try:
        extras = set(metadata.metadata("edgeflow").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        extras = set()
    if extras and name not in extras:
        return 'install the plugin that provides it (pip install "edgeflow[all]" brings every EdgeFlow plugin)'
    # The EdgeFlow plugins' extras are named after what they register: edgeflow[web], edgeflow[shm], ...
    return f'install it with: pip install "edgeflow[{name}]"'


def lookup(kind: str, name: str) -> Any:
    """Return the piece of `kind` registered as `name`; PluginError names the installed ones and the pip extra."""
    found = installed(kind)
    if not isinstance(name, str) or name not in found:
        listing = ", ".join(sorted(found)) or "none"
        raise PluginError(
            f"no {kind} named {name!r} is installed (installed {kind}s: {listing}); {install_hint(kind, str(name))}",
            kind=kind,
            name=str(name),
        )
    return found[name]


def get_broker(name: str) -> type[Broker]:
    """Return the broker class registered as `name` (`redis`, `dualredis`, `shm`, ...)."""
    cls: type[Broker] = lookup("broker", name)
    return cls


def get_interface(name: str) -> type[GatewayInterface]:
    """Return the gateway interface class registered as `name` (`web`, `ros2`, ...)."""
    cls: type[GatewayInterface] = lookup("interface", name)
    return cls


def get_deployer(name: str) -> Any:
    """Return the deployer registered as `name` (`kubernetes`, ...): it has `name`, `help` and a click `command`."""
    return lookup("deployer", name)


def get_exporter(name: str) -> Callable[[], Any]:
    """Return the factory of the metrics exporter registered as `name` (`prometheus`, `k8s`, ...)."""
    factory: Callable[[], Any] = lookup("exporter", name)
    return factory


def get_codec(name: str) -> Codec:
    """Return the link codec registered as `name` (`jpeg`, ...)."""
    codec: Codec = lookup("codec", name)
    return codec


def get_sink(name: str) -> type[SinkNode]:
    """Return the sink class registered as `name` (`sqlite`, `file`, `mcap`, ...)."""
    cls: type[SinkNode] = lookup("sink", name)
    return cls


def plugin_info() -> list[dict[str, Any]]:
    """Describe each registered plugin: name, distribution, version, hooks, and the names it gives per kind."""
    pm = get_plugin_manager()
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    provides: dict[str, dict[str, list[str]]] = {}
    for kind, hook_name in KINDS.items():
        _, by_plugin = _collect(getattr(pm.hook, hook_name).get_hookimpls(), kind)
        for plugin_name, names in by_plugin.items():
            provides.setdefault(plugin_name, {})[kind] = sorted(names)
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
        out.append(
            {"name": name, "distribution": dist_name, "version": version, "hooks": hooks,
             "provides": provides.get(name, {})}
        )  # fmt: skip
    return out
