"""Helpers for tests that start processes as a user would."""

from __future__ import annotations

import os


def user_env(**extra: str) -> dict[str, str]:
    """This environment as a user's process has it: plugins load from their entry points (tests/conftest.py turns
    that off for the test process itself), with `extra` variables set."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(extra)
    return env
