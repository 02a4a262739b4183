"""The benchmark can't rot: `python -m benchmarks --quick` runs every case and writes numbers (never timed here)."""

from __future__ import annotations

import json
import math
import pkgutil
import subprocess
import sys
from pathlib import Path

import benchmarks.cases

from ..helpers import user_env

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_case_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    env = user_env()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    machine = doc["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["numpy"] and "loadavg_start" in machine
    modules = {m.name for m in pkgutil.iter_modules(benchmarks.cases.__path__) if not m.name.startswith("_")}
    rows = doc["results"]
    assert modules <= {r["module"] for r in rows}, "every case module produced rows"
    errors = [r for r in rows if r["metric"] == "error"]
    assert not errors, [(r["case"], r["broker"], r["note"]) for r in errors]
    for r in rows:
        assert set(r) >= {"case", "broker", "metric", "value", "unit", "note"}, r
    rates = [r for r in rows if r["metric"] == "rate"]
    assert rates, "throughput rows exist"
    for r in rates:
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]) and r["value"] > 0, r
    assert "msg/s" in proc.stdout, "the table was printed"
