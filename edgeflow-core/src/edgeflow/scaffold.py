"""`edgeflow init NAME`: a new project that runs, tests and deploys as it is, to be edited from there.

It writes main.py (a producer, a consumer with two replicas and a gateway with the web dashboard), requirements.txt,
a README and tests/test_app.py, which runs the app with `edgeflow.testing.RunningApp` and checks that frames flow
end to end. Nothing is overwritten: a folder that already holds one of these files is refused.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from string import Template

import click

from .errors import ConfigurationError

__all__ = ["init_command", "scaffold"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

MAIN = '''\
"""$name: an EdgeFlow app. `python main.py` runs it; the dashboard is on http://localhost:8000/dashboard."""

import numpy as np

from edgeflow import EdgeApp
from edgeflow.config import settings
from edgeflow.nodes import ConsumerNode, GatewayNode, ProducerNode
from edgeflow.nodes.gateway.interfaces.web import WebInterface

app = EdgeApp("$name")  # on the Redis of REDIS_URL, localhost:6379, or an embedded one


@app.node(name="camera", type="producer", fps=30)
class Camera(ProducerNode):
    """A moving gradient: replace produce() with your camera or sensor."""

    def configure(self):
        self.step = 0
        self.columns = np.arange(320, dtype=np.uint16)

    def produce(self):  # an ndarray, bytes, JSON data or a Frame; None ends the stream
        self.step += 1
        image = np.empty((240, 320, 3), np.uint8)
        image[:] = ((self.columns + 4 * self.step) % 256).astype(np.uint8)[None, :, None]
        return image


@app.node(name="brightness", type="consumer", replicas=2)
class Brightness(ConsumerNode):
    """Measures each image: replace process() with your model."""

    def process(self, frame):  # return data, (data, meta), or None to send nothing
        return {"mean": round(float(frame.mean()), 2)}


@app.node(name="gateway", type="gateway")
class Gateway(GatewayNode):
    """The dashboard, MJPEG streams and the JSON API, on GATEWAY_HTTP_PORT (8000)."""

    def configure(self):
        self.add_interface(WebInterface(port=settings.GATEWAY_HTTP_PORT))


if __name__ == "__main__":
    app.link("camera").to("brightness").to("gateway")
    app.link("camera").to("gateway")
    app.run()  # every node in this process; `python main.py --node camera` runs one node
'''

TEST = '''\
"""Runs the app in this process with edgeflow.testing and checks that frames flow end to end.

It needs a Redis: REDIS_URL, one on localhost:6379, or an embedded one (`pip install "edgeflow[embedded]"` or a
redis-server on PATH).
"""

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgeflow.embedded import free_port
from edgeflow.loader import load_app
from edgeflow.testing import RunningApp, wait_for

MAIN = Path(__file__).resolve().parents[1] / "main.py"


@pytest.fixture
def ports(monkeypatch):
    """Free ports for the gateway, so that the test runs beside anything on 8000 and 8080."""
    http, tcp = free_port(), free_port()
    monkeypatch.setenv("GATEWAY_HTTP_PORT", str(http))
    monkeypatch.setenv("GATEWAY_TCP_PORT", str(tcp))
    return http


def test_brightness_measures_a_frame():
    node = load_app(MAIN).nodes["brightness"].cls()
    assert node.process(np.full((4, 4, 3), 10, np.uint8)) == {"mean": 10.0}


def test_frames_flow_to_the_dashboard(ports):
    app = load_app(MAIN)
    with RunningApp(app, embedded=True) as run:
        assert wait_for(lambda: run.stats("gateway").get("frames_in", 0) >= 30, timeout=30), run.stats("gateway")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports}/api/status", timeout=5) as answer:
            topics = json.load(answer)["topics"]
        assert {"camera", "brightness"} <= topics.keys()
    assert run.summary["brightness"]["frames_in"] > 0
    assert run.summary["brightness"]["failed"] == 0
'''

README = """\
# $name

An [EdgeFlow](https://github.com/witdory/edgeflow) app: `camera` makes images, `brightness` (two replicas)
measures them, and `gateway` shows both on a dashboard.

```bash
pip install -r requirements.txt
python main.py                        # every node in one process; http://localhost:8000/dashboard
python main.py --node brightness      # or one node per process, on any machine reaching the same Redis
```

It uses the Redis of `REDIS_URL` (or `REDIS_HOST`/`REDIS_PORT`), one on localhost:6379, or starts an embedded one.

While it runs:

```bash
edgeflow status main.py               # nodes, replicas, rates, last errors
edgeflow logs main.py brightness      # its replicas' last log lines (-f to follow)
edgeflow trace main.py                # where the time goes, stage by stage
```

Test it (`pip install pytest`):

```bash
pytest
```

Deploy it to Kubernetes (`pip install "edgeflow[k8s]"`); add what main.py imports to requirements.txt, so that the
image has it:

```bash
edgeflow deploy main.py --registry registry.local:5000 --namespace $name --dry-run   # look first
edgeflow deploy main.py --registry registry.local:5000 --namespace $name
```
"""

REQUIREMENTS = """\
# What main.py needs. `edgeflow deploy` installs these in the app's image too (EdgeFlow itself there comes from
# the EdgeFlow you deploy with).
edgeflow[web]~=$version
"""


def scaffold(name: str, folder: Path) -> list[Path]:
    """Write a new project called `name` into `folder` (made if missing); return the files written."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"{name!r} can't name a project: use lower-case letters, digits and '-', starting with a letter "
            "(at most 40), so that it is also a valid app, folder and Kubernetes name"
        )
    version = metadata.version("edgeflow-core")
    files = {
        "main.py": MAIN,
        "requirements.txt": REQUIREMENTS,
        "README.md": README,
        "tests/test_app.py": TEST,
    }
    taken = [rel for rel in files if (folder / rel).exists()]
    if taken:
        raise ConfigurationError(
            f"{folder} already has {', '.join(taken)}: nothing was written; pick another folder with --path"
        )
    written = []
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(name=name, version=version))
        written.append(path)
    return written


@click.command("init")
@click.argument("name")
@click.option("--path", "path", type=click.Path(file_okay=False), help="the project's folder (default: ./NAME)")
def init_command(name: str, path: str | None) -> None:
    """Create a new project NAME: main.py (producer, consumer, gateway), requirements.txt, a README and a test.

    \b
    Examples:
      edgeflow init robot && cd robot && python main.py
      edgeflow init robot --path ~/src/robot
    """
    folder = Path(path) if path else Path(name)
    for written in scaffold(name, folder):
        click.echo(f"wrote {written}")
    click.echo(f"\nnext: cd {folder} && pip install -r requirements.txt && python main.py  (then `pytest`)")
