"""The image step without building: the generated Dockerfile, the build context, tags and builder commands.

No container engine here, so nothing is built: what is checked is what we would hand a builder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeflow_k8s import BuildError
from edgeflow_k8s.image import BuildContext, Builder, EdgeflowDist, dockerfile, unique_tag


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
        "RUN python -m pip install -r requirements.txt",
        "COPY app/ /app/",
        "USER 65532:65532",
    ]
    assert [lines.index(line) for line in order] == sorted(lines.index(line) for line in order)


def test_build_context_copies_the_app_and_builds_wheels(tmp_path: Path) -> None:
    """The context holds app/ without caches or virtualenvs, wheels/ from `pip wheel`, and the Dockerfile."""
    app = tmp_path / "myapp"
    (app / "__pycache__").mkdir(parents=True)
    (app / ".venv").mkdir()
    (app / "main.py").write_text("print('hi')\n")
    (app / "requirements.txt").write_text("numpy\n")
    (app / "__pycache__" / "x.pyc").write_bytes(b"")
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    ctx = BuildContext.prepare(app, "base:1", [EdgeflowDist("edgeflow-core", "0.1.0", Path("/src/core"))], run)
    try:
        assert sorted(p.name for p in (ctx.path / "app").iterdir()) == ["main.py", "requirements.txt"]
        assert (ctx.path / "Dockerfile").read_text() == ctx.dockerfile
        assert "RUN python -m pip install -r requirements.txt" in ctx.dockerfile
        assert calls[0][-1] == "/src/core" and calls[0][calls[0].index("-w") + 1] == str(ctx.path / "wheels")
    finally:
        ctx.cleanup()
    assert not ctx.path.exists()


def test_failed_wheel_build_is_a_build_error(tmp_path: Path) -> None:
    """A distribution that can't be packed stops the deploy with pip's own message."""

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no pyproject.toml")

    with pytest.raises(BuildError, match=r"can't build a wheel of edgeflow-core .*no pyproject.toml"):
        BuildContext.prepare(tmp_path, dists=[EdgeflowDist("edgeflow-core", "0.1.0", tmp_path)], run=run)


def test_tags_are_unique_per_deploy_and_per_content() -> None:
    """The tag joins the UTC second and the context digest, so two deploys never share one."""
    assert unique_tag("abcdef0123456789", now=0) == "19700101-000000-abcdef0123"
    assert unique_tag("abcdef0123456789", now=1) != unique_tag("abcdef0123456789", now=0)
    assert unique_tag("1111111111", now=0) != unique_tag("2222222222", now=0)


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
