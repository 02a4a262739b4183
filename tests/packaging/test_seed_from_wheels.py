"""EdgeFlow as PyPI would install it: `make dist`'s wheels, `pip install "edgeflow[web,k8s,opencv]"` into a fresh
virtual environment (not editable), and the seed example run from there until its dashboard shows frames.

Real: the build (scripts/dist.py, as `make dist` runs it, with this interpreter's hatchling so that no build
environment is downloaded), `twine check --strict`, pip resolving the third-party dependencies from the index or
its cache, the seed example unchanged as a process of the fresh venv's Python with its plugins loaded from their
entry points, a real redis-server, and the installed `edgeflow` console script asking that running app for its
status and a node's logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from edgeflow.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
#: What `pip install "edgeflow[web,k8s,opencv]"` takes from this repository's wheels.
WANTED = ("edgeflow", "edgeflow_core", "edgeflow_web", "edgeflow_k8s", "edgeflow_prometheus")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every sdist and wheel, built by scripts/dist.py and checked by twine."""
    out = tmp_path_factory.mktemp("dist")
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dist.py"), "--no-isolation", "--outdir", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "twine check passed" in done.stderr
    print(f"built and checked 18 files in {time.monotonic() - t0:.1f}s")
    return out


@pytest.fixture(scope="module")
def fresh(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with `edgeflow[web,k8s,opencv]` installed from the wheels (not editable); returns its bin/."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    wheels = {w.name.split("-")[0]: w for w in dist.glob("*.whl")}
    local = [str(wheels[name]) for name in WANTED if name != "edgeflow"]
    t0 = time.monotonic()
    # The wheel files are named on the command line, so pip takes these and not some other index's.
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{wheels['edgeflow']}[web,k8s,opencv]", *local],
        capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    print(f"installed edgeflow[web,k8s,opencv] in {time.monotonic() - t0:.1f}s")
    return env_dir / "bin"


def _user_env(**extra: str) -> dict[str, str]:
    """A user's environment: no test settings, nothing of this repository's venv on the path."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **extra}


def test_wheels_carry_the_license_and_metadata(dist: Path) -> None:
    """Each wheel ships the Apache-2.0 text and says so in its metadata (License-Expression, PEP 639)."""
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 9 and len(list(dist.glob("*.tar.gz"))) == 9
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            text = z.read(f"{info}/licenses/LICENSE").decode()
            meta = z.read(f"{info}/METADATA").decode()
        assert text.startswith("\n                                 Apache License\n"), wheel.name
        assert "License-Expression: Apache-2.0" in meta and "Project-URL: Source, https://github.com/witdory" in meta
        assert "Classifier: Programming Language :: Python :: 3" in meta


def test_the_seed_example_runs_from_the_wheels(fresh: Path, tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    """examples/main.py, copied out of the repository, runs on the installed packages: the dashboard answers, both
    image topics flow, `edgeflow status` and `edgeflow logs` see it, and SIGINT stops it with status 0."""
    where = subprocess.run(
        [str(fresh / "python"), "-c", "import edgeflow, edgeflow_web, cv2; print(edgeflow.__file__)"],
        capture_output=True, text=True, timeout=60, env=_user_env(),
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(fresh.parent / "lib")), "the venv's own copy, not this checkout"
    pip_check = subprocess.run([str(fresh / "python"), "-m", "pip", "check"], capture_output=True, text=True,
                               timeout=120, env=_user_env())  # fmt: skip
    assert pip_check.returncode == 0, pip_check.stdout

    app = tmp_path / "main.py"
    app.write_bytes((ROOT / "examples" / "main.py").read_bytes())
    http = free_port()
    env = _user_env(REDIS_URL=redis_server.url, GATEWAY_HTTP_PORT=str(http), GATEWAY_TCP_PORT=str(free_port()))
    proc = subprocess.Popen([str(fresh / "python"), str(app)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        fps = _wait_for_frames(proc, f"http://127.0.0.1:{http}")
        assert fps["fake_camera"] > 5 and fps["gpu_processor"] > 5, fps

        status = subprocess.run([str(fresh / "edgeflow"), "status", str(app), "--json"], capture_output=True,
                                text=True, timeout=60, env=env)  # fmt: skip
        assert status.returncode == 0, status.stderr
        nodes = {n["name"]: n for n in json.loads(status.stdout)["nodes"]}
        assert nodes["gpu_processor"]["status"] == "up" and nodes["gpu_processor"]["replicas_alive"] == 2
        logs = subprocess.run([str(fresh / "edgeflow"), "logs", str(app), "gateway"], capture_output=True,
                              text=True, timeout=60, env=env)  # fmt: skip
        assert logs.returncode == 0, logs.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-3000:]


def _wait_for_frames(proc: subprocess.Popen[str], base: str, timeout: float = 60.0) -> dict[str, float]:
    """Wait until the dashboard answers and both image topics have a rate; return the rates."""
    deadline = time.monotonic() + timeout
    fps: dict[str, float] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the seed example exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            page = httpx.get(f"{base}/dashboard", timeout=2)
            fps = httpx.get(f"{base}/api/fps", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        if page.status_code == 200 and "<html" in page.text.lower() and len(fps) == 2 and min(fps.values()) > 5:
            return fps
        time.sleep(0.3)
    pytest.fail(f"no frames on the dashboard within {timeout}s (rates {fps})")


def test_deploy_from_a_wheel_install_carries_those_wheels(fresh: Path, tmp_path: Path) -> None:
    """Deploying from the fresh venv: the distributions installed from wheel files go into the image as those
    wheels (they are on no index), the dry run needs no cluster, and the seed's cv2 is named as missing."""
    app = tmp_path / "main.py"
    app.write_bytes((ROOT / "examples" / "main.py").read_bytes())
    docker = subprocess.run([str(fresh / "edgeflow"), "deploy", str(app), "--print-dockerfile"], capture_output=True,
                            text=True, timeout=60, env=_user_env())  # fmt: skip
    assert docker.returncode == 0, docker.stderr
    assert "COPY wheels/ /tmp/edgeflow-wheels/" in docker.stdout
    assert "edgeflow-core==" not in docker.stdout, "not pinned from an index that doesn't have it"
    dry = subprocess.run([str(fresh / "edgeflow"), "deploy", str(app), "--registry", "r.local", "--dry-run"],
                         capture_output=True, text=True, timeout=60, env=_user_env())  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "main.py imports cv2" in dry.stderr and "add opencv-python-headless to requirements.txt" in dry.stderr
    assert "kind: NetworkPolicy" in dry.stdout and "r.local/test-distributed-system:sha-" in dry.stdout
