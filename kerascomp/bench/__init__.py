"""Measure every artifact as deployed, and choose among them.

:mod:`~kerascomp.bench.measure` runs each file in its own runtime (size, gzip
size, parameters, accuracy of the file itself, latency, kernel path);
:mod:`~kerascomp.bench.auto` converts a model in every candidate mode, measures
the files and keeps the fastest (or smallest) that holds the accuracy budget.

The package itself is callable: ``kerascomp.bench(paths, data)`` is
:func:`~kerascomp.bench.measure.bench`, as ``kerascomp bench`` is on the command line.
"""

import sys
import types

from kerascomp.bench.measure import FORMATS, bench, compare_deployed, deployed_outputs, latency_ms, machine_info

__all__ = ["bench", "compare_deployed", "latency_ms", "deployed_outputs", "machine_info", "FORMATS"]


class _CallablePackage(types.ModuleType):
    """``kerascomp.bench(...)`` calls :func:`bench`: the command's name is the Python call's too."""

    def __call__(self, *args, **kwargs):
        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
