"""Benchmark cases: each module exposes `run(quick: bool) -> list[dict]` (case, broker, metric, value, unit, note)."""
