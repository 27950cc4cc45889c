"""Latency as a device sees it: wall-clock milliseconds per call, after warm-up, as percentiles.

One home for the timing loop that ``bench`` reports and ``shrink --target
latency`` searches with, so both read the same numbers.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

__all__ = ["measure_latency"]


def measure_latency(call: Callable[[np.ndarray], object], x: np.ndarray, runs: int, warmup: int) -> dict:
    """Milliseconds per call of ``call(x)``: p50, p90 and mean over ``runs`` calls after ``warmup``."""
    for _ in range(warmup):
        call(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call(x)
        times[i] = time.perf_counter() - start
    times *= 1000.0
    return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90)), "mean": float(times.mean())}
