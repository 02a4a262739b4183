"""`python -m benchmarks.report [results.json]`: the Markdown tables of RESULTS.md: the ratios to the peers and the
ceilings from interleaved rounds (the `compare` case), then every case's figures as measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._table import fmt, pivot

DEFAULT = Path(__file__).resolve().parent / "results" / "latest.json"


def _v(metrics: dict[str, dict[str, Any]], name: str) -> float:
    r = metrics.get(name)
    v = r["value"] if r else None
    return float(v) if v is not None else float("nan")


def machine_md(doc: dict[str, Any]) -> str:
    """The machine line."""
    m = doc["machine"]
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, redis-py "
        f"{m['redis_py']}, {m['redis_server'].split(' sha')[0]}, zenoh {m['zenoh']}, dora-rs {m['dora_rs']}. "
        f"Load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}; at the end "
        f"{', '.join(f'{x:.2f}' for x in m.get('loadavg_end', []))}. Run started {doc['started']}"
        f"{', ended ' + doc['ended'] if doc.get('ended') else ''}."
    )


def _is_compare(case: str) -> bool:
    return case.endswith(("[quiet]", "[loaded]"))


def compare_md(rows: list[dict[str, Any]]) -> str:
    """The interleaved rounds: each system's median per mode, then each ratio's median, spread and target."""
    mine = [r for r in rows if _is_compare(r["case"])]
    workloads = list(dict.fromkeys(r["case"].rsplit(" [", 1)[0] for r in mine))
    out: list[str] = []
    for wl in workloads:
        at = {mode: [r for r in mine if r["case"] == f"{wl} [{mode}]"] for mode in ("quiet", "loaded")}
        systems = list(dict.fromkeys(r["broker"] for m in at.values() for r in m if r["metric"] != "ratio"))
        out += [f"**{wl}**", "", "| system | quiet msg/s | loaded msg/s | quiet p50 ms | loaded p50 ms | rounds |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for system in systems:
            cells = [system]
            vals = {m: {r["metric"]: r for r in at[m] if r["broker"] == system} for m in at}
            for metric in ("rate", "p50_ms"):
                for m in ("quiet", "loaded"):
                    got = vals[m].get(metric)
                    problem = vals[m].get("error") or vals[m].get("available")
                    cells.append(fmt(got["value"]) if got and got["value"] is not None else
                                 ("not run" if problem else "-"))  # fmt: skip
            runs = " / ".join(f"{m}: {vals[m]['rate']['note'].split('runs ', 1)[-1]}" for m in at if "rate" in vals[m])
            problem = next((vals[m].get("error") or vals[m].get("available") for m in at
                            if vals[m].get("error") or vals[m].get("available")), None)  # fmt: skip
            if problem:
                runs = (runs + " " if runs else "") + "(" + " ".join(str(problem["note"]).split())[-160:] + ")"
            if any(vals[m] and any(k.startswith("target_") for k in vals[m]) for m in at):
                runs += "; " + "; ".join(f"{m}: {v['note']}" for m in at for k, v in vals[m].items()
                                          if k.startswith("target_"))  # fmt: skip
            out.append("| " + " | ".join([*cells, runs]) + " |")
        ratios = list(dict.fromkeys(r["broker"] for m in at.values() for r in m if r["metric"] == "ratio"))
        if ratios:
            out += ["", "| ratio | quiet | loaded |", "|---|---|---|"]
            for name in ratios:
                cells = [name]
                for m in ("quiet", "loaded"):
                    got = next((r for r in at[m] if r["broker"] == name and r["metric"] == "ratio"), None)
                    if got is None or got["value"] is None:
                        cells.append("-")
                        continue
                    cells.append(f"{got['value']:.2f}x ({got['note'].replace('median of ', '')})")
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def link_md(rows: list[dict[str, Any]]) -> str:
    """Throughput and latency per workload, one run each: figures, not ratios (see `compare_md`)."""
    groups = pivot([r for r in rows if not _is_compare(r["case"])])
    by_case: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for case, system, metrics in groups:
        by_case.setdefault(case, {})[system] = metrics
    out = ["| workload | system | msg/s | MB/s | p50 ms | p99 ms | CPU % |", "|" + "---|" * 7]
    for case, systems in by_case.items():
        if not any(s.startswith(("ceiling", "peer", "edgeflow")) for s in systems) or "B " not in case:
            continue
        for system, metrics in systems.items():
            rate = _v(metrics, "rate")
            cpu = " ".join(f"{k[4:]} {fmt(v['value'])}" for k, v in metrics.items() if k.startswith("cpu_"))
            cells = [case, system, fmt(rate), fmt(_v(metrics, "mb_per_s")), fmt(_v(metrics, "p50_ms")),
                     fmt(_v(metrics, "p99_ms")), cpu]  # fmt: skip
            if "error" in metrics or "available" in metrics:
                note = (metrics.get("error") or metrics.get("available") or {}).get("note", "")
                cells[2] = "not run: " + " ".join(note.split())[-200:]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def other_md(rows: list[dict[str, Any]]) -> str:
    """Every other case (seed example, viewers, other engineers' cases) as metric lists."""
    out = ["| case | system | metric | value | unit | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        if ("B " in r["case"] and r["case"].split("B ")[0].isdigit()) or _is_compare(r["case"]):
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
    print("### Ratios from interleaved rounds, quiet and under a competing load\n")
    print(compare_md(rows), "\n")
    print("### One link, producer to consumer (one run each: figures, not ratios)\n")
    print(link_md(rows), "\n")
    print("### Seed example, gateway and other cases\n")
    print(other_md(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
