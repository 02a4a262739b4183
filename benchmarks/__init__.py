"""EdgeFlow benchmarks: `python -m benchmarks` measures the ceilings, the peers and EdgeFlow side by side."""
