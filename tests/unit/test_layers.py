"""The core's layers hold (import-linter), and no module of edgeflow-core imports a plugin package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "edgeflow-core" / "src" / "edgeflow"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):  # every import, at the top or inside a function
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_module_of_the_core_imports_a_plugin_package() -> None:
    plugins = {p.name for p in (ROOT / "plugins").iterdir()} | {"edgeflow-web", "edgeflow-k8s", "edgeflow-dualredis"}
    packages = {name.replace("-", "_") for name in plugins}
    assert {"edgeflow_web", "edgeflow_k8s", "edgeflow_dualredis", "edgeflow_shm"} <= packages
    offenders = []
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 30, "the scan sees the whole core"
    for file in files:
        for name in _imported(ast.parse(file.read_text(), str(file))):
            if name.split(".")[0] in packages or name.startswith("edgeflow_"):
                offenders.append(f"{file.relative_to(ROOT)}: import {name}")
    assert offenders == []


def test_the_import_linter_contracts_hold() -> None:
    """The layers of docs/architecture.md, from pyproject.toml's [tool.importlinter] (also run by `make lint`)."""
    done = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
    assert "The core is layered KEPT" in done.stdout and "The core imports no plugin KEPT" in done.stdout
