"""A plugin from outside the project (tests/plugins/edgeflow-acme), installed with pip, used by name.

It registers a broker (the Redis broker with a checksumming data plane), a gateway interface, a deployer and a
metrics exporter through the `edgeflow` entry points; an app names each, and the broker runs the contract suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeflow.embedded import free_port
from edgeflow.testing import wait_for
from edgeflow.testing.contract import BrokerContract

from ..helpers import user_env

ACME = Path(__file__).resolve().parents[1] / "plugins" / "edgeflow-acme"


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """edgeflow-acme installed with pip into a folder of its own (put on PYTHONPATH by the tests)."""
    site = tmp_path_factory.mktemp("acme-site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(ACME)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert list(site.glob("edgeflow_acme-*.dist-info/entry_points.txt")), "installed with its entry points"
    yield site


APP = """
import os
from edgeflow import EdgeApp
from edgeflow.nodes import ProducerNode, ConsumerNode, GatewayNode

app = EdgeApp(os.environ["APP_NAME"], broker="acme")

@app.node(name="sensor", type="producer", fps=100)
class Sensor(ProducerNode):
    def configure(self):
        self.i = 0
    def produce(self):
        self.i += 1
        return {"reading": self.i} if self.i <= 40 else None

@app.node(name="double", type="consumer")
class Double(ConsumerNode):
    def process(self, data):
        return {"reading": data["reading"] * 2}

@app.node(name="gateway", type="gateway")
class Gateway(GatewayNode):
    def configure(self):
        self.add_interface("acme-log", path=os.environ["FRAME_LOG"])

if __name__ == "__main__":
    app.link("sensor").to("double").to("gateway")
    app.run()
"""


def test_an_app_uses_the_plugins_broker_interface_exporter_and_deployer_by_name(
    acme_site: Path, redis_url: str, app_name: str, tmp_path: Path
) -> None:
    app_file = tmp_path / "main.py"
    app_file.write_text(textwrap.dedent(APP))
    frames, metrics = tmp_path / "frames.log", tmp_path / "metrics.jsonl"
    env = user_env(
        PYTHONPATH=str(acme_site), EDGEFLOW_LOAD_PLUGINS="acme", REDIS_URL=redis_url, APP_NAME=app_name,
        FRAME_LOG=str(frames), EDGEFLOW_METRICS="acme", ACME_METRICS_FILE=str(metrics),
        GATEWAY_TCP_PORT=str(free_port()),
    )  # fmt: skip
    plugins = subprocess.run([sys.executable, "-m", "edgeflow.cli", "plugins", "--json"], env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert plugins.returncode == 0, plugins.stderr
    acme = next(p for p in json.loads(plugins.stdout) if p["name"] == "acme")
    assert acme["distribution"] == "edgeflow-acme"
    assert acme["provides"] == {"broker": ["acme"], "deployer": ["acme"], "exporter": ["acme"],
                                "interface": ["acme-log"]}  # fmt: skip

    # A gateway serves until it is stopped: the app runs until the 40 frames reached it, then gets SIGTERM.
    run = subprocess.Popen([sys.executable, str(app_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)  # fmt: skip
    try:
        arrived = wait_for(lambda: frames.exists() and len(frames.read_text().splitlines()) >= 40, timeout=30)
        time.sleep(1.5)  # one more statistics report after the last frame
    finally:
        run.terminate()
        out, _ = run.communicate(timeout=15)
    assert arrived and run.returncode == 0, out
    assert "broker AcmeBroker" in out, "the app's broker is the one named 'acme'"
    lines = frames.read_text().splitlines()
    assert sorted(int(line.split()[1]) for line in lines if line.startswith("double ")) == list(range(40))
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert {r["node"] for r in records} == {"sensor", "double", "gateway"}, "the exporter got every node's figures"
    assert max(r["frames_out"] for r in records if r["node"] == "double") == 40

    out_dir = tmp_path / "deployed"
    deploy = subprocess.run(
        [sys.executable, "-m", "edgeflow.cli", "deploy", "--target", "acme", str(app_file), "--out", str(out_dir)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    plan = json.loads((out_dir / "plan.json").read_text())
    assert [ln["target"] for ln in plan["links"]] == ["double", "gateway"]


def test_a_third_party_broker_runs_the_contract_suite(acme_site: Path, redis_server: object) -> None:
    """The suite in edgeflow.testing.contract, run from the plugin's own tests against every registered broker."""
    env = user_env(PYTHONPATH=str(acme_site), EDGEFLOW_LOAD_PLUGINS="acme")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v"],  # in the plugin's folder, with its own pytest configuration
        env=env, capture_output=True, text=True, timeout=300, cwd=ACME,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    contract = [name for name in dir(BrokerContract) if name.startswith("test_")]
    for variant in ("acme", "redis"):
        passed = [line for line in done.stdout.splitlines() if f"[{variant}] PASSED" in line]
        assert len(passed) == len(contract), f"{variant}: {len(passed)} of {len(contract)} contract tests passed"
