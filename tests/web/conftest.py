"""The web plugin is registered for every test here, as its entry point would be in a user's environment."""

from __future__ import annotations

import pytest

import edgeflow_web.plugin
from edgeflow.plugins import get_plugin_manager


@pytest.fixture(autouse=True)
def _web_plugin(_fresh_plugins: None) -> None:
    get_plugin_manager().register(edgeflow_web.plugin, name="web")
