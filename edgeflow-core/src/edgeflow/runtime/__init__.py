"""The runtime: the runner, one worker per node replica, their outputs, statistics and fusion matching."""

from __future__ import annotations

from .runner import AppLoaded, loading, main, run_app

__all__ = ["AppLoaded", "loading", "main", "run_app"]
