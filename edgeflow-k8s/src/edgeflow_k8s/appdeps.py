"""The app's own dependencies, for its image: requirements.txt or pyproject.toml beside main.py, and what main.py
imports that neither lists.

The image installs EdgeFlow from the deploying machine (edgeflow_k8s.image), then the app's requirements: from
`requirements.txt`, else from `[project] dependencies` of `pyproject.toml`. Requirements naming an EdgeFlow
distribution are left out, as the image's EdgeFlow layer has them already. A module main.py imports is provided
when it is the standard library's, the app's own (a .py file or package in its folder), EdgeFlow's, or comes from
a distribution the requirements bring (directly or through their dependencies, as installed here); anything else
would be missing in the pod, and `missing_imports` names it with the distribution that provides it here.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edgeflow.errors import ConfigurationError

__all__ = ["AppDependencies", "MissingImport", "app_dependencies", "canonical", "missing_imports"]

log = logging.getLogger("edgeflow.k8s.image")


def canonical(name: str) -> str:
    """Return a distribution name as PEP 503 compares them: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class AppDependencies:
    """The app's requirements for its image: where they came from, the lines pip installs, those left out."""

    source: str | None = None
    lines: list[str] = field(default_factory=list)
    requirements: list[Requirement] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The requirements file the image installs (empty when the app lists nothing)."""
        if not self.lines:
            return ""
        head = f"# From {self.source}, for `pip install -r` in the image"
        dropped = "".join(f"# (in the image's EdgeFlow layer already: {x})\n" for x in self.left_out)
        return f"{head}\n{dropped}" + "".join(f"{line}\n" for line in self.lines)


def _is_edgeflow(req: Requirement, image_dists: set[str]) -> bool:
    name = canonical(req.name)
    return name == "edgeflow" or name in image_dists


def _from_requirements_txt(path: Path) -> list[tuple[str, Requirement | None]]:
    out: list[tuple[str, Requirement | None]] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            # Options (-r, -c, --index-url, -e ...) pass through to pip as they are.
            out.append((line, None))
            continue
        try:
            out.append((line, Requirement(line)))
        except InvalidRequirement as exc:
            raise ConfigurationError(f"{path}: {line!r} is not a requirement pip can read ({exc}); fix it") from exc
    return out


def app_dependencies(app_dir: Path, image_dists: Iterable[str]) -> AppDependencies:
    """Read the app's requirements beside main.py (requirements.txt first, else pyproject.toml)."""
    dists = {canonical(d) for d in image_dists}
    found: list[tuple[str, Requirement | None]] = []
    source = None
    if (app_dir / "requirements.txt").is_file():
        source = "requirements.txt"
        found = _from_requirements_txt(app_dir / "requirements.txt")
    elif (app_dir / "pyproject.toml").is_file():
        source = "pyproject.toml"
        try:
            project = tomllib.loads((app_dir / "pyproject.toml").read_text()).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{app_dir / 'pyproject.toml'} is not valid TOML: {exc}") from exc
        for line in project.get("dependencies", []):
            try:
                found.append((line, Requirement(line)))
            except InvalidRequirement as exc:
                raise ConfigurationError(f"pyproject.toml: dependency {line!r} is not valid ({exc})") from exc
    deps = AppDependencies(source)
    for line, req in found:
        if req is not None and _is_edgeflow(req, dists):
            deps.left_out.append(line)
            continue
        deps.lines.append(line)
        if req is not None:
            deps.requirements.append(req)
    return deps


def _closure(requirements: Iterable[Requirement]) -> tuple[set[str], set[str]]:
    """Return (distributions the requirements bring as installed here, requirements not installed here)."""
    seen: set[str] = set()
    absent: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            absent.add(name)
            continue
        seen.add(name)
        for line in dist.requires or []:
            try:
                sub = Requirement(line)
            except InvalidRequirement:
                continue
            extras = [{"extra": e} for e in ("", *req.extras)]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in extras):
                todo.append(sub)
    return seen, absent


def _imports(main: Path) -> list[str]:
    try:
        tree = ast.parse(main.read_text(), str(main))
    except SyntaxError:
        return []  # loading the app reports it
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module.split(".")[0])
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class MissingImport:
    """A module main.py imports that the image would not have, and the distribution providing it here (if any)."""

    module: str
    distribution: str | None


def missing_imports(main: Path, image_dists: Iterable[str], deps: AppDependencies) -> list[MissingImport]:
    """Return the modules main.py imports that neither the app's requirements nor EdgeFlow's image layer bring."""
    folder = main.parent
    provided, absent = _closure([*deps.requirements, *(Requirement(d) for d in image_dists)])
    by_module = metadata.packages_distributions()
    out = []
    for module in _imports(main):
        if module in sys.stdlib_module_names or module == "edgeflow" or module.startswith("edgeflow_"):
            continue
        if (folder / f"{module}.py").is_file() or (folder / module).is_dir():
            continue  # the app's own module or package
        dists = [canonical(d) for d in by_module.get(module, [])]
        if any(d in provided for d in dists):
            continue
        if not dists and absent:
            continue  # maybe a listed requirement that is not installed here provides it: can't tell
        out.append(MissingImport(module, by_module.get(module, [None])[0]))
    return out
