"""The web plugin is registered for the hostile tests that run a gateway with a WebInterface by name."""

from __future__ import annotations

import pytest

import edgeflow_web.plugin
from edgeflow.plugins import get_plugin_manager


@pytest.fixture(autouse=True)
def _web_plugin(_fresh_plugins: None) -> None:
    get_plugin_manager().register(edgeflow_web.plugin, name="web")
