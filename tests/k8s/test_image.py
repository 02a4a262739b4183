"""The image step without building: the generated Dockerfile, the build context, the content tag, what goes into
the image (EdgeFlow's plugins by entry point, the app's requirements), the builder commands and their output.

No container engine here (tests/k8s/test_image_build.py builds with a real buildah): what is checked is what we
would hand a builder, and how we read what it answers. The distributions looked up are the ones really installed
in this venv, plus one written as pip writes an installed distribution (a .dist-info folder on sys.path).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from edgeflow_k8s import BuildError
from edgeflow_k8s.appdeps import app_dependencies, missing_imports
from edgeflow_k8s.image import (
    BuildContext,
    Builder,
    EdgeflowDist,
    _stream,
    content_tag,
    dockerfile,
    edgeflow_distributions,
    push_advice,
)

CORE = EdgeflowDist("edgeflow-core", "0.1.0")


def test_dockerfile_layers_edgeflow_then_requirements_then_the_app() -> None:
    """Local distributions come in as wheels, released ones pinned, the app's requirements before its code."""
    text = dockerfile(
        [EdgeflowDist("edgeflow-core", "0.1.0", Path("/src/core")), EdgeflowDist("edgeflow-k8s", "0.1.0")],
        "python:3.11-slim",
        requirements=True,
    )
    lines = text.splitlines()
    assert lines[1] == "FROM python:3.11-slim"
    order = [
        "COPY wheels/ /tmp/edgeflow-wheels/",
        'RUN python -m pip install "edgeflow-k8s==0.1.0"',
        "COPY requirements.edgeflow.txt /tmp/requirements.edgeflow.txt",
        "RUN python -m pip install -r /tmp/requirements.edgeflow.txt && rm /tmp/requirements.edgeflow.txt",
        "COPY app/ /app/",
        "USER 65532:65532",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)


def _app(tmp_path: Path, main: str = "print('hi')\n", **files: str) -> Path:
    app = tmp_path / "myapp"
    app.mkdir(exist_ok=True)
    (app / "main.py").write_text(textwrap.dedent(main))
    for name, text in files.items():
        (app / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return app


def test_build_context_copies_the_app_and_builds_wheels(tmp_path: Path) -> None:
    """The context holds app/ without caches or virtualenvs, wheels/ from `pip wheel` and from wheel files, the
    app's requirements without EdgeFlow's own (the image has this machine's), and the Dockerfile."""
    app = _app(
        tmp_path, requirements__txt="numpy>=1.24\nedgeflow[web]~=0.1.0\n--extra-index-url https://x.test/simple\n"
    )
    (app / "__pycache__").mkdir()
    (app / ".venv").mkdir()
    (app / "__pycache__" / "x.pyc").write_bytes(b"")
    wheel = tmp_path / "edgeflow_acme-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    dists = [
        EdgeflowDist("edgeflow-core", "0.1.0", Path("/src/core")),
        EdgeflowDist("edgeflow-acme", "1.0", None, wheel),
    ]
    ctx = BuildContext.prepare(app, "base:1", dists, run)
    try:
        assert sorted(p.name for p in (ctx.path / "app").iterdir()) == ["main.py", "requirements.txt"]
        assert (ctx.path / "Dockerfile").read_text() == ctx.dockerfile
        assert "RUN python -m pip install -r /tmp/requirements.edgeflow.txt" in ctx.dockerfile
        requirements = (ctx.path / "requirements.edgeflow.txt").read_text().splitlines()
        assert [r for r in requirements if not r.startswith("#")] == [
            "numpy>=1.24",
            "--extra-index-url https://x.test/simple",
        ]
        assert "# (in the image's EdgeFlow layer already: edgeflow[web]~=0.1.0)" in requirements
        assert calls[0][-1] == "/src/core" and calls[0][calls[0].index("-w") + 1] == str(ctx.path / "wheels")
        assert (ctx.path / "wheels" / wheel.name).read_bytes() == b"PK"
        assert ctx.digest.startswith(content_tag(app, dists, "base:1").removeprefix("sha-"))
    finally:
        ctx.cleanup()
    assert not ctx.path.exists()


def test_failed_wheel_build_is_a_build_error(tmp_path: Path) -> None:
    """A distribution that can't be packed stops the deploy with pip's own message."""

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no pyproject.toml")

    with pytest.raises(BuildError, match=r"can't build a wheel of edgeflow-core .*no pyproject.toml"):
        BuildContext.prepare(tmp_path, dists=[EdgeflowDist("edgeflow-core", "0.1.0", tmp_path)], run=run)


def test_the_tag_is_the_contents(tmp_path: Path) -> None:
    """The same app, EdgeFlow and base give the same tag (no clock in it); any of them changing gives another."""
    app = _app(tmp_path)
    src = tmp_path / "core-src"
    src.mkdir()
    (src / "mod.py").write_text("x = 1\n")
    dists = [EdgeflowDist("edgeflow-core", "0.1.0", src), EdgeflowDist("edgeflow-web", "0.1.0")]
    first = content_tag(app, dists, "base:1")
    time.sleep(1.1)
    assert content_tag(app, dists, "base:1") == first and first.startswith("sha-") and len(first) == 20
    (app / "__pycache__").mkdir()
    (app / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert content_tag(app, dists, "base:1") == first, "caches are not part of the image"
    assert content_tag(app, dists, "base:2") != first
    assert content_tag(app, [dists[0], EdgeflowDist("edgeflow-web", "0.1.1")], "base:1") != first
    (src / "mod.py").write_text("x = 2\n")
    changed_core = content_tag(app, dists, "base:1")
    assert changed_core != first, "a source install counts by its files, not only its version"
    (app / "main.py").write_text("print('bye')\n")
    assert content_tag(app, dists, "base:1") not in (first, changed_core)


def test_plugins_are_found_by_entry_point_not_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every installed distribution with an `edgeflow` entry point goes into the image, whatever its name; an
    `edgeflow-*` distribution without one does not."""
    site = tmp_path / "site"
    for name, entry in (("acme_vision", "[edgeflow]\nacme = acme_vision.plugin\n"), ("edgeflow_notes", None)):
        info = site / f"{name}-2.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 2.0\n")
        if entry:
            (info / "entry_points.txt").write_text(entry)
    monkeypatch.syspath_prepend(str(site))
    found = {d.name: d for d in edgeflow_distributions()}
    assert "acme-vision" in found and found["acme-vision"].version == "2.0"
    assert "edgeflow-notes" not in found
    assert {"edgeflow-core", "edgeflow-web", "edgeflow-k8s", "edgeflow-prometheus", "edgeflow-shm"} <= found.keys()
    assert next(iter(found)) == "edgeflow-core", "the core first: the plugins' wheels need it"
    assert found["edgeflow-web"].source == Path(__file__).resolve().parents[2] / "edgeflow-web"


_SEEDLIKE = """
    import os
    import cv2
    import numpy as np
    import yaml
    from helpers import draw
    from edgeflow import EdgeApp
    """


def test_an_import_no_requirement_brings_is_named(tmp_path: Path) -> None:
    """cv2 comes from opencv-python-headless here, which nothing lists: named. numpy (the core's), yaml (the k8s
    plugin's PyYAML), os and the app's own helpers.py are there."""
    app = _app(tmp_path, _SEEDLIKE, helpers__py="def draw(): pass\n")
    dists = [d.name for d in edgeflow_distributions()]
    deps = app_dependencies(app, dists)
    missing = missing_imports(app / "main.py", dists, deps)
    assert [(m.module, m.distribution) for m in missing] == [("cv2", "opencv-python-headless")]
    (app / "requirements.txt").write_text("opencv-python-headless>=4.8\n")
    assert missing_imports(app / "main.py", dists, app_dependencies(app, dists)) == []


def test_pyproject_dependencies_count_when_there_is_no_requirements_txt(tmp_path: Path) -> None:
    """`[project] dependencies` of a pyproject.toml beside main.py are the app's requirements."""
    app = _app(tmp_path, _SEEDLIKE, helpers__py="", pyproject__toml="""
        [project]
        name = "seedlike"
        version = "1"
        dependencies = ["opencv-python-headless>=4.8", "edgeflow[web]"]
        """)  # fmt: skip
    deps = app_dependencies(app, ["edgeflow-core"])
    assert deps.source == "pyproject.toml" and deps.lines == ["opencv-python-headless>=4.8"]
    assert deps.left_out == ["edgeflow[web]"]
    assert missing_imports(app / "main.py", [d.name for d in edgeflow_distributions()], deps) == []


def test_deploy_warns_of_the_seed_examples_cv2(tmp_path: Path) -> None:
    """The dry run of the seed example, which lists no requirements, warns that its image would lack cv2."""
    seed = Path(__file__).resolve().parents[2] / "examples" / "main.py"
    app = tmp_path / "seed"
    app.mkdir()
    (app / "main.py").write_bytes(seed.read_bytes())
    env = {"EDGEFLOW_LOAD_PLUGINS": "k8s,web", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("edgeflow")), "deploy", str(app / "main.py"), "--registry", "r.local",
         "--dry-run"], capture_output=True, text=True, timeout=90, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        "main.py imports cv2, which neither requirements.txt nor pyproject.toml beside it lists (here it comes from "
        "opencv-python-headless)"
    ) in done.stderr
    assert "add opencv-python-headless to requirements.txt" in done.stderr


@pytest.mark.parametrize(
    ("name", "platforms", "expected"),
    [
        ("docker", ["linux/amd64", "linux/arm64"],
         [["docker", "buildx", "build", "--platform", "linux/amd64,linux/arm64", "--tag", "r/a:t", "--push", "ctx"]]),
        ("buildah", [], [["buildah", "bud", "--tag", "r/a:t", "ctx"], ["buildah", "push", "r/a:t", "docker://r/a:t"]]),
        ("podman", ["linux/amd64", "linux/arm64"],
         [["podman", "build", "--platform", "linux/amd64,linux/arm64", "--manifest", "r/a:t", "ctx"],
          ["podman", "manifest", "push", "--all", "r/a:t", "docker://r/a:t"]]),
        ("nerdctl", ["linux/arm64"],
         [["nerdctl", "build", "--platform", "linux/arm64", "--tag", "r/a:t", "ctx"], ["nerdctl", "push", "r/a:t"]]),
    ],
)  # fmt: skip
def test_builder_commands(name: str, platforms: list[str], expected: list[list[str]]) -> None:
    """Each builder gets its own build-and-push commands, multi-arch included."""
    assert Builder(name, name).commands(Path("ctx"), "r/a:t", platforms) == expected


def test_a_builders_output_is_handed_on_line_by_line_as_it_comes() -> None:
    """Each line reaches the callback before the builder prints the next (a real `sh`, pausing between lines)."""
    seen: list[tuple[str, float]] = []
    t0 = time.monotonic()
    code, kept = _stream(["sh", "-c", "echo STEP 1/2; sleep 0.6; echo oops >&2; sleep 0.6; echo STEP 2/2; exit 3"],
                         lambda line: seen.append((line, time.monotonic() - t0)))  # fmt: skip
    assert code == 3 and kept == ["STEP 1/2", "oops", "STEP 2/2"]
    assert [line for line, _ in seen] == kept
    assert seen[0][1] < 0.5 and 0.5 < seen[1][1] < 1.1, f"lines came at {seen}, not as they were printed"


@pytest.mark.parametrize(
    ("output", "insecure", "says", "never"),
    [
        ("Error: writing blob: unauthorized: authentication required", True, "podman login reg:5000", "--insecure"),
        ('Error: pinging container registry reg:5000: Get "https://reg:5000/v2/": http: server gave HTTP response '
         "to HTTPS client", False, "deploy with --insecure-registry", "login"),
        ("x509: certificate signed by unknown authority", True, "--insecure-registry is set, yet TLS failed",
         "deploy with --insecure-registry"),
        ('Error: dial tcp 127.0.0.1:5999: connect: connection refused', True, "can't be reached from this machine",
         "--insecure-registry"),
        ("Error: name unknown: repository name not known to registry", False, "refused the image's name", "login"),
    ],
)  # fmt: skip
def test_push_advice_fits_the_cause(output: str, insecure: bool, says: str, never: str) -> None:
    """The advice follows what the registry said, and never suggests a flag that is already set."""
    advice = push_advice([output], "podman", "reg:5000", insecure)
    assert says in advice and never not in advice
