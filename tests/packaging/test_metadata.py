"""What every distribution tells PyPI: license, classifiers, URLs, sibling pins, READMEs that render there.

Read from the pyproject.toml files themselves (no build): `tests/packaging/test_seed_from_wheels.py` builds them and
runs `twine check`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trove_classifiers
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from dist import distributions  # noqa: E402

REPO = "https://github.com/witdory/edgeflow"
DISTS = distributions(ROOT)


def _project(folder: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return project


def _id(folder: Path) -> str:
    return str(folder.relative_to(ROOT)) if folder != ROOT else "edgeflow"


def test_every_distribution_is_listed() -> None:
    """`make dist` builds the root meta-distribution and each of the eight members."""
    names = sorted(_project(f)["name"] for f in DISTS)
    assert names == sorted(
        ["edgeflow", "edgeflow-core", "edgeflow-web", "edgeflow-k8s", "edgeflow-dualredis", "edgeflow-shm",
         "edgeflow-mcap", "edgeflow-prometheus", "edgeflow-ros2"]
    )  # fmt: skip


@pytest.mark.parametrize("folder", DISTS, ids=_id)
def test_license_and_metadata(folder: Path) -> None:
    """Apache-2.0 as an SPDX expression with the license text shipped, an author, keywords, URLs, valid classifiers."""
    project = _project(folder)
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (folder / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
    assert project["authors"] and project["keywords"]
    unknown = [c for c in project["classifiers"] if c not in trove_classifiers.classifiers]
    assert not unknown, f"not trove classifiers: {unknown}"
    # PEP 639: the license is the SPDX expression; a License :: classifier beside it is refused by the backends.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert {"Homepage", "Source", "Issues", "Documentation"} <= project["urls"].keys()
    assert all(url.startswith(REPO) for url in project["urls"].values())


@pytest.mark.parametrize("folder", DISTS, ids=_id)
def test_sibling_pins_follow_the_policy(folder: Path) -> None:
    """Siblings are required as compatible releases of the same minor version (CONTRIBUTING.md): `~=0.1.0`."""
    versions = {_project(f)["name"]: Version(_project(f)["version"]) for f in DISTS}
    project = _project(folder)
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    reqs += [Requirement(r) for extra in project.get("optional-dependencies", {}).values() for r in extra]
    siblings = [r for r in reqs if r.name in versions]
    assert siblings or project["name"] == "edgeflow-core"
    for r in siblings:
        (spec,) = r.specifier
        sibling = versions[r.name]
        assert spec.operator == "~=", f"{project['name']} requires {r}: use ~= for a sibling"
        assert Version(spec.version) == sibling, f"{project['name']} requires {r}, but {r.name} is {sibling}"
        assert len(spec.version.split(".")) == 3, "~=X.Y.Z allows X.Y.*, never the next minor"


def test_the_opencv_extra_brings_what_the_seed_example_imports() -> None:
    """`pip install "edgeflow[web,opencv]"` is enough for examples/main.py, and the README's quick start says so."""
    extras = _project(ROOT)["optional-dependencies"]
    assert [Requirement(r).name for r in extras["opencv"]] == ["opencv-python-headless"]
    assert 'pip install "edgeflow[web,opencv]"' in (ROOT / "README.md").read_text()


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img[^>]+src=\"([^\"]+)\"")


@pytest.mark.parametrize("folder", DISTS, ids=_id)
def test_readmes_pypi_shows_use_absolute_urls(folder: Path) -> None:
    """PyPI renders each distribution's README away from the repository: relative links and images would break."""
    readme = folder / _project(folder)["readme"]
    relative = [
        target
        for m in _LINK.finditer(readme.read_text())
        if not re.match(r"^(https?://|mailto:|#)", target := m.group(1) or m.group(2))
    ]
    assert not relative, f"{readme.relative_to(ROOT)} links relatively to {relative}"
