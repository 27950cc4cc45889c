"""Shrinking to a latency target: time candidate cuts in LiteRT on this machine, keep the largest fast enough.

MACs predict latency only roughly: a channel count that does not fill the
CPU's vector registers, an op that leaves XNNPACK or memory-bound layers bend
the line. So ``--target latency`` measures. The global MAC-ranked removal order
of :func:`~kerascomp.compress.shrink.allocate.allocate` gives one family of cuts,
from the whole model down to the smallest allowed; each candidate is rebuilt
(weights do not change latency, so nothing trains), converted to float32 and
timed (batch 1, one thread, XNNPACK: :func:`kerascomp.bench.latency_ms`), and a bisection over the MAC share finds
the largest cut whose p50 is within ``keep`` of the input's. The answer is this
machine's: a device with other kernels has other latencies.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kerascomp.compress.shrink.allocate import allocate
from kerascomp.compress.shrink.graph import Graph, Group
from kerascomp.compress.shrink.surgery import rebuild
from kerascomp.errors import Unreachable

__all__ = ["fit_latency"]

STEPS = 6  # bisection steps over the MAC share: the answer within 1/64 of it


def fit_latency(graph: Graph, groups: list[Group], scores: dict[int, np.ndarray], keep: float, round_to: int,
                measure: Callable[[object], float]) -> tuple[dict[int, np.ndarray], dict]:
    """The largest cut in MAC order whose ``measure(model)`` (p50 ms) is at most ``keep`` of the input's.

    ``measure`` is :func:`kerascomp.bench.latency_ms` where the CLI, the
    pipeline and :func:`kerascomp.compress_file` call (compress imports no
    export or bench: the measurement is passed in).

    Returns the kept channels and the measurement: ``before``, ``after``, the
    ``goal`` and every ``tries`` (MAC share, p50). Raises :class:`~kerascomp.errors.Unreachable` when even
    the smallest allowed cut is too slow, saying how fast it is.
    """
    base = measure(graph.model)
    goal, fast, slow = keep * base, 0.0, 1.0  # MAC shares known to be fast enough / too slow
    best, tries, share = None, [], keep
    for _ in range(STEPS):
        try:
            kept = allocate(graph, groups, scores, "macs", share, round_to)
        except Unreachable:  # below the smallest allowed cut
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
        raise Unreachable(f"no cut reaches {keep:.0%} of the input's {base:.4f} ms on this machine; the fastest "
                         f"measured runs at {fastest:.4f} ms ({fastest / base:.0%})")
    return best[0], {"before": base, "after": best[1], "goal": goal, "tries": tries}
