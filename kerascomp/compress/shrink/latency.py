"""Shrinking to a latency target: time candidate cuts in LiteRT on this machine, keep the largest fast enough.

MACs predict latency only roughly: a channel count that does not fill the
CPU's vector registers, an op that leaves XNNPACK or memory-bound layers bend
the line. So ``--target latency`` measures. The global MAC-ranked removal order
of :func:`~kerascomp.compress.shrink.allocate.allocate` gives one family of cuts,
from the whole model down to the smallest allowed; each candidate is rebuilt
(weights do not change latency, so nothing trains), converted to float32 and
timed (batch 1, one thread, XNNPACK), and a bisection over the MAC share finds
the largest cut whose p50 is within ``keep`` of the input's. The answer is this
machine's: a device with other kernels has other latencies.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from kerascomp.compress.shrink.allocate import allocate
from kerascomp.compress.shrink.graph import Graph, Group
from kerascomp.compress.shrink.surgery import rebuild
from kerascomp.errors import ModelError
from kerascomp.export.tflite import to_tflite
from kerascomp.runtime import load, measure_latency

__all__ = ["p50_ms", "fit_latency"]

RUNS = 200  # timed calls per candidate: a p50 steady to a few per cent on small models
STEPS = 6  # bisection steps over the MAC share: the answer within 1/64 of it


def p50_ms(model, runs: int = RUNS) -> float:
    """Median milliseconds of one batch-1 call of ``model`` as a float32 LiteRT file on one thread."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "candidate.tflite"
        to_tflite(model, path, min_agreement=0.0)
        runner = load(path, threads=1)
        x = np.zeros((1, *model.input_shape[1:]), runner.input_dtype)
        return measure_latency(runner.run, x, runs, warmup=runs // 10)["p50"]


def fit_latency(graph: Graph, groups: list[Group], scores: dict[int, np.ndarray], keep: float, round_to: int,
                measure: Callable[[object], float] = p50_ms) -> tuple[dict[int, np.ndarray], dict]:
    """The largest cut in MAC order whose ``measure`` (p50 ms) is at most ``keep`` of the input's.

    Returns the kept channels and the measurement: ``before``, ``after``, the
    ``goal`` and every ``tries`` (MAC share, p50). Raises ModelError when even
    the smallest allowed cut is too slow, saying how fast it is.
    """
    base = measure(graph.model)
    goal, fast, slow = keep * base, 0.0, 1.0  # MAC shares known to be fast enough / too slow
    best, tries, share = None, [], keep
    for _ in range(STEPS):
        try:
            kept = allocate(graph, groups, scores, "macs", share, round_to)
        except ModelError:  # below the smallest allowed cut
            fast, share = share, (share + slow) / 2
            continue
        measured = measure(rebuild(graph, kept))
        tries.append({"macs_share": round(share, 4), "p50_ms": measured})
        if measured <= goal:
            best, fast = (kept, measured), share
        else:
            slow = share
        share = (fast + slow) / 2
    if best is None:
        fastest = min(t["p50_ms"] for t in tries) if tries else base
        raise ModelError(f"no cut reaches {keep:.0%} of the input's {base:.4f} ms on this machine; the fastest "
                         f"measured runs at {fastest:.4f} ms ({fastest / base:.0%})")
    return best[0], {"before": base, "after": best[1], "goal": goal, "tries": tries}
