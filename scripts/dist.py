"""Build every EdgeFlow distribution's sdist and wheel into dist/, then check them with twine (`make dist`).

The distributions are the root `edgeflow` meta-distribution and the workspace members of the root pyproject.toml.
Each wheel is built from its sdist (`python -m build`'s default), so an sdist that misses a file fails here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the development venv runs 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def distributions(root: Path = ROOT) -> list[Path]:
    """Return the folder of every distribution: the root first, then the workspace members in order."""
    conf = tomllib.loads((root / "pyproject.toml").read_text())
    found = [root]
    for member in conf["tool"]["uv"]["workspace"]["members"]:
        found += sorted(p.parent for p in root.glob(f"{member}/pyproject.toml"))
    return found


def main(argv: list[str] | None = None) -> int:
    """Build every distribution into --outdir and run `twine check --strict` on the lot; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist", help="where the files go (emptied first)")
    parser.add_argument("--no-isolation", action="store_true", help="build with this interpreter's hatchling")
    args = parser.parse_args(argv)
    out: Path = args.outdir.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for folder in distributions():
        name = str(folder.relative_to(ROOT)) if folder != ROOT else "edgeflow (the root)"
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "build", "--outdir", str(out), *(["--no-isolation"] if args.no_isolation else [])]
        done = subprocess.run([*cmd, str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"dist: building {name} failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return done.returncode
        print(f"dist: built {name} in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    files = sorted(str(p) for p in out.iterdir())
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files])
    if checked.returncode == 0:
        print(f"dist: {len(files)} files in {out}, twine check passed", file=sys.stderr)
    return checked.returncode


if __name__ == "__main__":
    sys.exit(main())
