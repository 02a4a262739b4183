"""`python -m benchmarks [--quick] [--only PATTERN]`: run every case, print the table, write the JSON."""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import math
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import cases
from ._harness import row
from ._table import table

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine() -> dict[str, Any]:
    """Describe this machine and the versions that shape the numbers."""
    from edgeflow.embedded import find_server_binary

    server = find_server_binary()
    redis_version = "none"
    if server:
        out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=10).stdout
        redis_version = out.strip()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": _version("numpy"),
        "redis_py": _version("redis"),
        "redis_server": redis_version,
        "zenoh": _version("eclipse-zenoh"),
        "dora_rs": _version("dora-rs"),
        "edgeflow_shm": _version("edgeflow-shm"),
        "loadavg_start": list(os.getloadavg()),
        "py_spy": shutil.which("py-spy") or "not installed",
    }


def _modules(only: str | None) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(cases.__path__) if not m.name.startswith("_"))
    if only:
        names = [n for n in names if fnmatch.fnmatch(n, f"*{only}*")]
    return names


def _clean(value: Any) -> Any:
    # JSON has no NaN: a missing measurement is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the cases and write benchmarks/results/latest.json."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few frames per case, not timed (the smoke test)")
    p.add_argument("--only", metavar="PATTERN", help="run only the case modules whose name contains PATTERN")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = p.parse_args(argv)

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, numpy {info['numpy']}, "
          f"{info['redis_server']}, load average {info['loadavg_start']}", flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for name in _modules(args.only):
        t0 = time.monotonic()
        print(f"-- {name}", flush=True)
        try:
            got = importlib.import_module(f"{cases.__name__}.{name}").run(args.quick)
        except Exception as exc:  # one broken case must not hide the others' numbers
            traceback.print_exc()
            got = [row(name, "-", "error", float("nan"), "", f"{type(exc).__name__}: {exc}"[:300])]
        for r in got:
            r.setdefault("module", name)
        rows += got
        timings[name] = round(time.monotonic() - t0, 1)
        print(table(got), flush=True)
    info["loadavg_end"] = list(os.getloadavg())
    doc = {
        "quick": args.quick,
        "started": started,
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "seconds": timings,
        "results": [{k: _clean(v) for k, v in r.items()} for r in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(f"\nwrote {args.out} ({len(rows)} results); load average at the end {info['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
