"""The printed table: one line per (case, broker), the usual metrics as columns, the rest appended."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "pivot", "table"]

COLUMNS = [("rate", "msg/s"), ("mb_per_s", "MB/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]


def fmt(value: Any) -> str:
    """A number short enough for a table cell."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    v = float(value)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def pivot(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, dict[str, Any]]]]:
    """Group rows by (case, broker) in first-seen order: metric -> row."""
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["broker"]), {})[r["metric"]] = r
    return [(c, b, m) for (c, b), m in groups.items()]


def table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a fixed-width table."""
    head = ["case", "system", *[h for _, h in COLUMNS], "cpu % (per process)", "other"]
    lines = []
    for case, broker, metrics in pivot(rows):
        cells = [case, broker, *[fmt(metrics[m]["value"]) if m in metrics else "" for m, _ in COLUMNS]]
        cpu = " ".join(f"{k[4:]}={fmt(v['value'])}" for k, v in metrics.items() if k.startswith("cpu_"))
        known = {m for m, _ in COLUMNS}
        other = [
            f"{k}={fmt(v['value'])}{v['unit'] if v['unit'] not in ('', '%') else ''}"
            for k, v in metrics.items()
            if k not in known and not k.startswith("cpu_")
        ]
        notes = {v["note"] for v in metrics.values() if v.get("note")}
        cells += [cpu, " ".join(other + sorted(notes))]
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=False)] if lines else []
    widths = [min(w, 44) for w in widths[:-1]] + widths[-1:]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=False))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)) for cells in lines]
    return "\n".join(out)
