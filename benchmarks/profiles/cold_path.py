"""Why one process at 30 fps waits longer on a quiet virtual machine than on a busy one: the same encode and decode
of a 640x480x3 frame, back to back (warm) and once every 1/30 s (cold: the vCPU slept in between).

`python -m benchmarks.profiles.cold_path` prints the medians of both in microseconds.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from edgeflow.frame import Frame, decode, encode


def measure(pause: float, n: int = 90) -> tuple[float, float]:
    """Median microseconds of encode() and decode() with `pause` seconds of sleep before each frame."""
    data = np.zeros((480, 640, 3), np.uint8)
    enc, dec = [], []
    for i in range(n):
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        header, payload = encode(Frame(i, time.time(), {}, data))
        t1 = time.perf_counter()
        decode(header, payload if isinstance(payload, memoryview) else memoryview(payload))
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return statistics.median(enc) * 1e6, statistics.median(dec) * 1e6


if __name__ == "__main__":
    for name, pause in (("warm (back to back)", 0.0), ("cold (one frame every 1/30 s)", 1 / 30)):
        e, d = measure(pause)
        print(f"{name}: encode {e:.1f} us, decode {d:.1f} us")
