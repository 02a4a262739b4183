"""The plugin's entry module stays light, and its hooks register what they promise."""

from __future__ import annotations

import subprocess
import sys

import click

from edgeflow.plugins import get_deployer, get_plugin_manager, installed
from edgeflow_k8s import KubernetesDeployer


def test_entry_module_imports_no_kubernetes() -> None:
    """A node that only captures frames loads the plugin (for its hooks) without importing kubernetes or YAML."""
    code = (
        "import sys, edgeflow_k8s.plugin as p; from edgeflow.plugins import get_plugin_manager as g; "
        "g().register(p); from edgeflow.plugins import registry; registry('register_metrics')['k8s']; "
        "print(sorted(m for m in ('kubernetes', 'yaml', 'urllib3') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_hooks_register_commands_and_deployer(k8s_plugin: None) -> None:
    """`register_commands` adds `delete`; `register_deployers` names the Kubernetes deployer, whose commands the
    core's `edgeflow deploy`, `status` and `logs` run."""
    group = click.Group("edgeflow")
    get_plugin_manager().hook.register_commands(cli=group)
    assert sorted(group.commands) == ["delete"]
    (deployer,) = installed("deployer").values()
    assert isinstance(deployer, KubernetesDeployer)
    assert get_deployer("kubernetes") is deployer
    assert deployer.command.name == "deploy" and "--registry" in {o for p in deployer.command.params for o in p.opts}
    assert deployer.status_command.name == "status" and deployer.logs_command.name == "logs"
