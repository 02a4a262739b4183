"""EdgeFlow as a new user gets it: the core installed from its wheel into a fresh virtual environment, with no
plugin. Every seed import path and lookup that needs a missing plugin says which pip extra brings it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding edgeflow-core (from a wheel built here) and its dependencies, nothing else."""
    tmp = tmp_path_factory.mktemp("fresh")
    wheels = tmp / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(wheels), str(ROOT / "edgeflow-core")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    (wheel,) = wheels.glob("edgeflow_core-*.whl")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    yield python


def _run(python: Path, code: str, cwd: Path) -> str:
    done = subprocess.run([str(python), "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_missing_plugin_names_the_extra_to_install(core_only: Path, tmp_path: Path) -> None:
    out = _run(
        core_only,
        """
        import importlib.metadata as md
        names = (d.metadata["Name"] for d in md.distributions())
        print("dists", sorted(n for n in names if n.startswith("edgeflow")))
        from edgeflow import EdgeApp, PluginError
        from edgeflow.nodes import GatewayNode
        for stmt in ("from edgeflow.nodes.gateway.interfaces.web import WebInterface",
                     "from edgeflow.comms.brokers import DualRedisBroker"):
            try:
                exec(stmt)
            except ImportError as e:
                print("import:", e)
        for make in (lambda: EdgeApp("x", broker="shm"), lambda: GatewayNode().add_interface("web", port=8000)):
            try:
                make()
            except PluginError as e:
                print("lookup:", e)
        """,
        tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == "dists ['edgeflow-core']", "nothing but the core is installed"
    web, dual, shm, iface = lines[1:]
    assert (
        web.startswith("import: WebInterface is the gateway interface named 'web'")
        and 'pip install "edgeflow[web]"' in web
    )
    assert 'pip install "edgeflow[dualredis]"' in dual and "installed brokers: redis" in dual
    assert shm.startswith("lookup: EdgeApp(broker=...): no broker named 'shm'") and '"edgeflow[shm]"' in shm
    assert iface.startswith("lookup: no interface named 'web' is installed (installed interfaces: none)")


def test_the_cli_names_the_extra_of_a_missing_deployer_or_exporter(core_only: Path, tmp_path: Path) -> None:
    app = tmp_path / "main.py"
    app.write_text(
        textwrap.dedent("""
        from edgeflow import EdgeApp
        from edgeflow.nodes import ProducerNode
        app = EdgeApp("fresh")
        @app.node(name="cam", type="producer")
        class Cam(ProducerNode):
            def produce(self):
                return None
        if __name__ == "__main__":
            app.run()
    """)
    )
    edgeflow = core_only.parent / "edgeflow"
    deploy = subprocess.run([str(edgeflow), "deploy", str(app), "--registry", "r.local"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert deploy.returncode == 2
    assert "no deployer named 'kubernetes' is installed" in deploy.stderr
    assert 'pip install "edgeflow[kubernetes]"' in deploy.stderr
    metrics = subprocess.run([str(core_only), str(app)], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "EDGEFLOW_METRICS": "prometheus"})  # fmt: skip
    assert metrics.returncode == 2, metrics.stderr
    assert "no exporter named 'prometheus' is installed" in metrics.stderr
    assert 'pip install "edgeflow[prometheus]"' in metrics.stderr
