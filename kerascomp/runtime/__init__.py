"""The edge path: run a ``.tflite`` file with ``ai_edge_litert`` and numpy only, never TensorFlow.

:mod:`kerascomp.runtime.interpreter` loads and runs a file as a device would;
:mod:`kerascomp.runtime.kernels` says where each of its nodes runs (XNNPACK
partitions and the ops left outside them); :mod:`kerascomp.runtime.tensors` reads its
constant tensors and ops without running it; :mod:`kerascomp.runtime.trial` runs a file from
elsewhere once in a child process before anyone opens it; :mod:`kerascomp.runtime.timing`
times its calls.
"""

from kerascomp.runtime.interpreter import Scaling, TFLiteModel, load, softmax
from kerascomp.runtime.tensors import constant_tensors, op_names
from kerascomp.runtime.timing import measure_latency
from kerascomp.runtime.trial import trial_run

__all__ = ["load", "TFLiteModel", "Scaling", "softmax", "constant_tensors", "op_names", "measure_latency", "trial_run"]
