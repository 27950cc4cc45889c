"""Measure every artifact as deployed, and choose among them.

:mod:`~kerascomp.bench.measure` runs each file in its own runtime (size, gzip
size, parameters, accuracy of the file itself, latency, kernel path);
:mod:`~kerascomp.bench.auto` converts a model in every candidate mode, measures
the files and keeps the fastest (or smallest) that holds the accuracy budget.
"""

from kerascomp.bench.measure import FORMATS, bench, compare_deployed, latency_ms, machine_info, predict_test_split

__all__ = ["bench", "compare_deployed", "latency_ms", "predict_test_split", "machine_info", "FORMATS"]
