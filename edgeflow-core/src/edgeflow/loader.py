"""Load an app from its file without running it (for `edgeflow deploy` and other tools)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from .app import EdgeApp
from .errors import ConfigurationError
from .runtime import AppLoaded, loading

__all__ = ["load_app"]


def load_app(path: str | Path) -> EdgeApp:
    """Execute `path` as `__main__` up to its `app.run()` and return the app, links included.

    The file's folder is importable while it loads, as it is for `python main.py`. A file that never
    calls `app.run()` is searched for a module-level EdgeApp instead.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise ConfigurationError(f"can't load an app from {str(path)!r}: no such file")
    folder = str(file.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    saved_argv = sys.argv
    token = loading.set(True)
    try:
        sys.argv = [str(file)]
        namespace = runpy.run_path(str(file), run_name="__main__")
    except AppLoaded as loaded:
        return loaded.app
    except SystemExit as exc:
        raise ConfigurationError(f"{file} exited while loading (status {exc.code}) before calling app.run()") from exc
    finally:
        loading.reset(token)
        sys.argv = saved_argv
        if added and folder in sys.path:
            sys.path.remove(folder)
    apps = [v for v in namespace.values() if isinstance(v, EdgeApp)]
    if len(apps) != 1:
        raise ConfigurationError(f"{file} defines {len(apps)} EdgeApp objects and never calls app.run(); expected one")
    return apps[0]
