"""`python -m benchmarks.report [results.json]`: the Markdown tables of RESULTS.md, with each EdgeFlow figure's
ratio to the ceilings and the peers measured in the same run."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from ._table import fmt, pivot

DEFAULT = Path(__file__).resolve().parent / "results" / "latest.json"
CEILINGS = ["ceiling redis-py", "ceiling tcp", "ceiling shm-ring"]
PEERS = ["peer dora-rs", "peer zenoh"]


def _v(metrics: dict[str, dict[str, Any]], name: str) -> float:
    r = metrics.get(name)
    v = r["value"] if r else None
    return float(v) if v is not None else float("nan")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if math.isfinite(a) and math.isfinite(b) and b > 0 else "-"


def machine_md(doc: dict[str, Any]) -> str:
    """The machine line."""
    m = doc["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, redis-py "
        f"{m['redis_py']}, {m['redis_server'].split(' sha')[0]}, zenoh {m['zenoh']}, dora-rs {m['dora_rs']}. "
        f"Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}; at the end "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', []))}. Run started {doc['started']}."
    )


def link_md(rows: list[dict[str, Any]]) -> str:
    """Throughput and latency per workload, EdgeFlow rows with ratios to the ceilings and the peers."""
    groups = pivot(rows)
    by_case: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for case, system, metrics in groups:
        by_case.setdefault(case, {})[system] = metrics
    head = ("| workload | system | msg/s | MB/s | p50 ms | p99 ms | CPU % | vs redis-py | vs tcp | vs shm ring | "
            "vs dora-rs | vs zenoh |")  # fmt: skip
    out = [head, "|" + "---|" * 12]
    for case, systems in by_case.items():
        if not any(s.startswith(("ceiling", "peer", "edgeflow")) for s in systems) or "B " not in case:
            continue
        refs = {s: _v(systems[s], "rate") for s in CEILINGS + PEERS if s in systems}
        for system, metrics in systems.items():
            rate = _v(metrics, "rate")
            cpu = " ".join(f"{k[4:]} {fmt(v['value'])}" for k, v in metrics.items() if k.startswith("cpu_"))
            cells = [case, system, fmt(rate), fmt(_v(metrics, "mb_per_s")), fmt(_v(metrics, "p50_ms")),
                     fmt(_v(metrics, "p99_ms")), cpu]  # fmt: skip
            if system.startswith("edgeflow"):
                cells += [_ratio(rate, refs.get(s, float("nan"))) for s in CEILINGS + PEERS]
            else:
                cells += [""] * 5
            if "error" in metrics or "available" in metrics:
                note = (metrics.get("error") or metrics.get("available") or {}).get("note", "")
                cells[2] = "not run: " + " ".join(note.split())[-200:]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def other_md(rows: list[dict[str, Any]]) -> str:
    """Every other case (seed example, viewers, other engineers' cases) as metric lists."""
    out = ["| case | system | metric | value | unit | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "B " in r["case"] and r["case"].split("B ")[0].isdigit():
            continue
        note = " ".join(str(r["note"]).split())[-200:]
        out.append(f"| {r['case']} | {r['broker']} | {r['metric']} | {fmt(r['value'])} | {r['unit']} | {note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown tables for a results file."""
    args = sys.argv[1:] if argv is None else argv
    doc = json.loads(Path(args[0] if args else DEFAULT).read_text())
    rows = doc["results"]
    print(machine_md(doc), "\n")
    print("### One link, producer to consumer\n")
    print(link_md(rows), "\n")
    print("### Seed example, gateway and other cases\n")
    print(other_md(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
