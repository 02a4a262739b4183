"""The benchmark case runs quickly and reports both brokers' control-plane latency under video."""

from __future__ import annotations

import math
import time

from benchmarks.cases import dualredis_control_latency


def test_quick_run_reports_p50_and_p99_for_both_brokers() -> None:
    t0 = time.monotonic()
    rows = dualredis_control_latency.run(quick=True)
    assert time.monotonic() - t0 < 15
    for r in rows:
        assert set(r) == {"case", "broker", "metric", "value", "unit", "note"}
        assert isinstance(r["value"], float) and math.isfinite(r["value"]) and r["value"] > 0, r
    under_video = {(r["broker"], r["metric"]) for r in rows if r["case"] == dualredis_control_latency.CASE}
    assert under_video >= {(b, m) for b in ("redis", "dualredis") for m in ("p50_ms", "p99_ms", "rate")}
    video = [r for r in rows if r["case"] == dualredis_control_latency.VIDEO_CASE and r["metric"] == "rate"]
    assert {r["broker"] for r in video} == {"redis", "dualredis"}, "the video link really ran on both"
