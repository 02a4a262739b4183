"""A real image build and push by `edgeflow deploy`, without a Docker daemon: buildah, a local registry, skopeo.

Left out: a Docker daemon (the test machines have none), a Kubernetes cluster (the deploy's apply goes to the
in-memory API emulation of tests/k8s/apiserver.py) and a remote registry (none can be reached here, which is
also why the users' default base image, `python:3.11-slim`, can't be pulled and a local one stands in).

Real instead:
- the base image: Debian bookworm (Python 3.11, as in `python:3.11-slim`) made from Debian's packages with
  mmdebstrap: python3 and python3-venv (a venv at /opt/venv, first on PATH, stands for the slim image's own
  Python whose pip installs freely), and libstdc++6 (numpy's wheels need it; the slim image has it). It trusts
  this machine's CA bundle, for pip, as a company's base image trusts its proxy's CA. It is made once and kept
  in a buildah image store under ~/.cache/edgeflow/buildah, tagged by a hash of its recipe (suite, packages,
  CA bundle), so later runs on the same machine skip it; each run builds in its own temporary store that reads
  the base from there (containers-storage's `additionalimagestores`);
- the build and the push: the real `edgeflow deploy` console script with `--builder buildah --base-image ...
  --registry 127.0.0.1:PORT/... --insecure-registry`, so the plugin's own code builds the wheels and the
  context and runs `buildah bud` and `buildah push --tls-verify=false`. BUILDAH_ISOLATION=chroot makes `bud`
  run its RUN steps chrooted, with no OCI runtime and no user namespace; the storage driver is overlay, which
  mounts natively on these machines' ext4 (vfs, the fallback where it can't, copies every layer in full);
- the registry: Debian's docker-registry, started here on a free loopback port with its own small config and
  its storage in a temporary folder;
- `skopeo inspect` of the pushed tag, the content's (the same as `--dry-run` printed), which is also the image
  the Deployments got;
- the image pulled back from that registry runs `python main.py --list` under `buildah run --isolation chroot`.

Needs root, as the test machines give: mmdebstrap's root mode and buildah's rootful storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeflow.embedded import free_port

from .apiserver import FakeKubernetes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EDGEFLOW = str(Path(sys.executable).with_name("edgeflow"))
TOOLS = ("buildah", "skopeo", "mmdebstrap", "docker-registry")
SUITE = "bookworm"  # its python3 is 3.11, as in the default base image python:3.11-slim
BASE_PACKAGES = ("python3", "python3-venv", "libstdc++6")
MIRROR = os.environ.get("EDGEFLOW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_REPO = "localhost/edgeflow-test-base"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeflow"
APP = """
from edgeflow import EdgeApp
from edgeflow.comms import RedisBroker
from edgeflow.nodes import ProducerNode, SinkNode

app = EdgeApp("image-build-test", broker=RedisBroker())


@app.node(name="counter", type="producer", fps=5)
class Counter(ProducerNode):
    def configure(self):
        self.n = 0

    def produce(self):
        self.n += 1
        return {"n": self.n}


@app.node(name="printer", type="sink", replicas=2)
class Printer(SinkNode):
    def process(self, data):
        print(data)


if __name__ == "__main__":
    app.link("counter").to("printer")
    app.run()
"""


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


def _check(cmd: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = _run(cmd, env, timeout)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")
    return done.stdout


def _storage_conf(path: Path, graphroot: Path, runroot: Path, image_stores: tuple[Path, ...] = ()) -> Path:
    lines = ["[storage]", 'driver = "overlay"', f'graphroot = "{graphroot}"', f'runroot = "{runroot}"']
    if image_stores:
        lines += ["[storage.options]", f"additionalimagestores = {json.dumps([str(p) for p in image_stores])}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _pip_conf() -> str:
    conf = f"[global]\ncert = {HOST_CA}\n"
    if os.environ.get("PIP_INDEX_URL"):
        conf += f"index-url = {os.environ['PIP_INDEX_URL']}\n"
    return conf


@pytest.fixture(scope="module")
def tools() -> None:
    """The Debian tools this test drives; `scripts/bootstrap.sh test` installs them."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}: run `scripts/bootstrap.sh test` (or `make test`), which installs "
            "Debian's buildah, skopeo, mmdebstrap and docker-registry",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the real image build needs root (mmdebstrap's root mode, rootful buildah)", pytrace=False)
    if not HOST_CA.is_file():
        pytest.fail(f"no CA bundle at {HOST_CA} to give the base image's pip", pytrace=False)


@pytest.fixture(scope="module")
def base_image(tools: None) -> tuple[str, Path]:
    """The base image and the cached image store holding it, made with mmdebstrap on the first run only."""
    recipe = json.dumps([SUITE, BASE_PACKAGES, _pip_conf(), hashlib.sha256(HOST_CA.read_bytes()).hexdigest()])
    name = f"{BASE_REPO}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    store = CACHE / "buildah"
    conf = _storage_conf(store / "storage.conf", store / "root", store / "run")
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf))
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "buildah.lock").open("w") as lock:
        # Two test runs on one machine: the second waits for the first's base image.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _run(["buildah", "inspect", "--type", "image", name], env).returncode == 0:
            return name, store / "root"
        _run(["buildah", "rm", "--all"], env)  # the working container of an interrupted earlier attempt
        with tempfile.TemporaryDirectory(prefix="edgeflow-base-") as tmp:
            rootfs, pip_conf = Path(tmp) / "rootfs.tar", Path(tmp) / "pip.conf"
            pip_conf.write_text(_pip_conf())
            _check(
                [
                    "mmdebstrap",
                    "--variant=essential",
                    f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")),
                    '--customize-hook=chroot "$1" python3 -m venv /opt/venv',
                    f"--customize-hook=upload {HOST_CA} {HOST_CA}",
                    f"--customize-hook=upload {pip_conf} /etc/pip.conf",
                    SUITE,
                    str(rootfs),
                    MIRROR,
                ],
                env,
            )
            ctr = _check(["buildah", "from", "scratch"], env).strip()
            _check(["buildah", "add", "--quiet", ctr, str(rootfs), "/"], env)
            path = "PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            _check(["buildah", "config", "--env", path, "--env", "LANG=C.UTF-8", "--cmd", "python3", ctr], env)
            _check(["buildah", "commit", "--quiet", "--rm", ctr, name], env)
        # Base images of older recipes only take room now.
        listed = _check(["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"], env).split()
        stale = [image for image in listed if image.startswith(f"{BASE_REPO}:") and image != name]
        if stale:
            _run(["buildah", "rmi", *stale], env)
    return name, store / "root"


@pytest.fixture(scope="module")
def buildah_env(base_image: tuple[str, Path]) -> Iterator[dict[str, str]]:
    """Env for buildah with a temporary image store of its own that also reads the cached base image's store."""
    tmp = Path(tempfile.mkdtemp(prefix="edgeflow-buildah-"))
    conf = _storage_conf(tmp / "storage.conf", tmp / "root", tmp / "run", (base_image[1],))
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf), BUILDAH_ISOLATION="chroot")
    try:
        yield env
    finally:
        _run(["buildah", "rm", "--all"], env)
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            where = line.split()[1]
            if where.startswith(str(tmp)):
                subprocess.run(["umount", where], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tools: None) -> Iterator[str]:
    """Debian's docker-registry on a free loopback port, its config and storage in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="edgeflow-registry-") as tmp:
        port = free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": f"{tmp}/data"}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{port}"},
        }
        (Path(tmp) / "config.yml").write_text(yaml.safe_dump(config))
        with (Path(tmp) / "registry.log").open("wb") as log:
            proc = subprocess.Popen(
                ["docker-registry", "serve", f"{tmp}/config.yml"], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as answer:
                        if answer.status == 200:
                            break
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry didn't start:\n{(Path(tmp) / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            proc.kill()  # does nothing once it has exited
            proc.wait()


def test_deploy_builds_pushes_and_the_image_runs(
    tmp_path: Path,
    fake_k8s: FakeKubernetes,
    registry: str,
    buildah_env: dict[str, str],
    base_image: tuple[str, Path],
) -> None:
    """`edgeflow deploy --builder buildah` shows buildah's steps as they run, builds and pushes the content's tag
    (the one the dry run printed), and the pulled image lists the app's graph.

    Left out: a Docker daemon, a Kubernetes cluster (the API emulation stands in) and a remote registry (a local
    docker-registry stands in); see the module's docstring for what is real.
    """
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(textwrap.dedent(APP).lstrip())
    env = {k: v for k, v in buildah_env.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(EDGEFLOW_LOAD_PLUGINS="k8s", KUBECONFIG=os.environ["KUBECONFIG"])
    deploy = [EDGEFLOW, "deploy", str(app / "main.py"), "--registry", f"{registry}/edgeflow-test", "-n", "imgtest"]
    deploy += ["--builder", "buildah", "--base-image", base_image[0], "--insecure-registry", "--timeout", "30"]
    dry = _run([*deploy, "--dry-run"], env)
    assert dry.returncode == 0, dry.stderr[-3000:]
    dry_image = next(yaml.safe_load_all(dry.stdout))  # the Namespace; the image is in the Deployments
    dry_images = {o["spec"]["template"]["spec"]["containers"][0]["image"] for o in yaml.safe_load_all(dry.stdout)
                  if o["kind"] == "Deployment" and o["metadata"]["name"] in ("counter", "printer")}  # fmt: skip
    assert dry_image["kind"] == "Namespace" and len(dry_images) == 1
    done = _run(deploy, env)
    assert done.returncode == 0, done.stderr[-3000:]
    # buildah's own output, line by line as it ran (its steps, then the push), before the deploy's last words.
    steps = re.findall(r"^  buildah \| STEP (\d+)/(\d+): (\w+)", done.stderr, re.M)
    assert steps and steps[0][:1] == ("1",) and steps[0][2] == "FROM", done.stderr[-3000:]
    assert [int(s[0]) for s in steps] == list(range(1, int(steps[0][1]) + 1))
    assert done.stderr.index("buildah | STEP 1/") < done.stderr.index("deployed 'image-build-test'")

    # The Deployments run the pushed image, under the deploy's unique tag.
    images = {
        name: fake_k8s.get("Deployment", name, "imgtest")["spec"]["template"]["spec"]["containers"][0]["image"]  # type: ignore[index]
        for name in ("counter", "printer")
    }
    image = images["counter"]
    assert images["printer"] == image
    assert re.fullmatch(rf"{re.escape(registry)}/edgeflow-test/image-build-test:sha-[0-9a-f]{{16}}", image)
    assert dry_images == {image}, "the dry run named the image the deploy pushed"
    assert f"deployed 'image-build-test' ({image})" in done.stderr

    # The registry holds it: the tag, the layers and the config the generated Dockerfile asked for.
    ref = f"docker://{image}"
    inspected = json.loads(_check(["skopeo", "inspect", "--tls-verify=false", ref], env))
    assert image.rsplit(":", 1)[1] in inspected["RepoTags"]
    assert inspected["Os"] == "linux" and len(inspected["Layers"]) >= 2
    assert "PYTHONUNBUFFERED=1" in inspected["Env"]
    config = json.loads(_check(["skopeo", "inspect", "--tls-verify=false", "--config", ref], env))["config"]
    assert config["User"] == "65532:65532" and config["WorkingDir"] == "/app"
    assert config["Cmd"] == ["python", "main.py", "--list"]

    # Pulled back from the registry (not the local copy the build left), the image runs the app.
    _check(["buildah", "rmi", image], env)
    ctr = _check(["buildah", "from", "--quiet", "--tls-verify=false", ref], env).strip()
    listed = _check(["buildah", "run", "--isolation", "chroot", ctr, "--", "python", "main.py", "--list"], env)
    assert "app image-build-test" in listed
    assert re.search(r"^\s+counter\s+producer\s+replicas=1", listed, re.M), listed
    assert re.search(r"^\s+printer\s+sink\s+replicas=2", listed, re.M), listed
    assert re.search(r"^\s+counter -> printer\s", listed, re.M), listed


def test_a_push_to_a_registry_that_is_not_there_says_so(
    tmp_path: Path, fake_k8s: FakeKubernetes, buildah_env: dict[str, str], base_image: tuple[str, Path]
) -> None:
    """A registry address nothing listens on, with --insecure-registry set: the deploy quotes buildah's error and
    says the registry can't be reached, without suggesting --insecure-registry again. (The build reuses the layers
    of the test above, in the same image store.)"""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(textwrap.dedent(APP).lstrip())
    env = {k: v for k, v in buildah_env.items() if k != "EDGEFLOW_DISABLE_PLUGIN_AUTOLOAD"}
    env.update(EDGEFLOW_LOAD_PLUGINS="k8s", KUBECONFIG=os.environ["KUBECONFIG"])
    closed = f"127.0.0.1:{free_port()}"
    deploy = [EDGEFLOW, "deploy", str(app / "main.py"), "--registry", f"{closed}/edgeflow-test", "-n", "imgtest"]
    deploy += ["--builder", "buildah", "--base-image", base_image[0], "--insecure-registry", "--timeout", "30"]
    done = _run(deploy, env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"the registry refused the push of {closed}/edgeflow-test/image-build-test:sha-" in done.stderr
    quoted = [line for line in done.stderr.splitlines() if line.startswith("  | ")]
    assert any("connection refused" in line for line in quoted), done.stderr[-3000:]
    assert f"{closed} can't be reached from this machine" in done.stderr
    assert "deploy with --insecure-registry" not in done.stderr
    assert fake_k8s.applied == []
