"""What a ``.tflite`` file asks of the device: multiply-accumulates per call and peak activation memory.

Both are read from the file itself (its flatbuffer, through the schema module
ai_edge_litert ships), in the order LiteRT executes the nodes, so they hold for
any delegate. Tensor shapes are the interpreter's after one call on zeros:
a graph that computes its shapes at run time (``SHAPE``, ``RESHAPE`` with a
computed shape, as Keras attention layers produce) stores placeholders in the
file. MACs count the matrix work of convolutions, depthwise
convolutions, fully connected layers, batch matmuls and transposed
convolutions at the file's own batch size (1 for the files kerascomp writes).
Peak activation memory is *computed*, not measured: every non-constant tensor
lives from the node that writes it (or the start, for inputs) to the last node
that reads it (or the end, for outputs), and the peak is the largest sum of
live tensor bytes at any node. LiteRT's arena is at least this large (it adds
alignment and may not reuse every freed byte), so the figure is a lower bound
of what the interpreter allocates for activations.
"""

from __future__ import annotations

import math
import os

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from kerascomp.errors import ModelError

__all__ = ["footprint"]

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_ITEM_BYTES = {schema.TensorType.FLOAT32: 4, schema.TensorType.FLOAT16: 2, schema.TensorType.INT32: 4,
               schema.TensorType.UINT8: 1, schema.TensorType.INT64: 8, schema.TensorType.INT16: 2,
               schema.TensorType.INT8: 1, schema.TensorType.BOOL: 1, schema.TensorType.FLOAT64: 8}


def footprint(path: str | os.PathLike) -> dict:
    """``macs`` per call and ``peak_activation_bytes`` of a ``.tflite`` file (see the module for how)."""
    try:
        with open(os.fspath(path), "rb") as handle:
            data = handle.read()
        model = schema.Model.GetRootAs(data, 0)
        graph = model.Subgraphs(0)
    except (OSError, AttributeError, IndexError) as exc:
        raise ModelError(f"cannot read {path} as a TFLite model: {exc}") from None
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    shapes = [tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else () for t in tensors]
    shapes = _run_shapes(data, shapes)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        ops.append((_OP_NAMES.get(builtin, str(builtin)), [int(t) for t in op.InputsAsNumpy() if t >= 0],
                    [int(t) for t in op.OutputsAsNumpy() if t >= 0]))
    constant = {i for i, t in enumerate(tensors) if t.Buffer() and _has_data(model.Buffers(t.Buffer()))}
    return {"macs": int(sum(_macs(name, inputs, outputs, shapes) for name, inputs, outputs in ops)),
            "peak_activation_bytes": _peak(graph, ops, tensors, shapes, constant)}


def _run_shapes(data: bytes, shapes: list[tuple]) -> list[tuple]:
    """Every tensor's shape as the interpreter resolves it on one call (the file's own where it lists none)."""
    interpreter = Interpreter(model_content=data,  # no delegate: only the shapes are wanted
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    interpreter.invoke()
    resolved = list(shapes)
    for detail in interpreter.get_tensor_details():
        if detail["index"] < len(resolved):
            resolved[detail["index"]] = tuple(int(d) for d in detail["shape"])
    return resolved


def _has_data(buffer) -> bool:
    return buffer.Offset() > 1 or (not buffer.DataIsNone() and buffer.DataLength() > 0)


def _macs(name: str, inputs: list[int], outputs: list[int], shapes: list[tuple]) -> int:
    """One node's multiply-accumulates: output elements times the inputs each of them sums over."""
    if not outputs or not inputs:
        return 0
    out = math.prod(shapes[outputs[0]])
    if name == "CONV_2D":  # filter: (out channels, height, width, in channels per group)
        return out * math.prod(shapes[inputs[1]][1:])
    if name == "DEPTHWISE_CONV_2D":  # filter: (1, height, width, channels)
        return out * math.prod(shapes[inputs[1]][1:3])
    if name == "FULLY_CONNECTED":  # weights: (units, inputs)
        return out * shapes[inputs[1]][-1]
    if name == "BATCH_MATMUL":
        return out * shapes[inputs[0]][-1]
    if name == "TRANSPOSE_CONV":  # inputs: output shape, filter (out channels, h, w, in channels), input
        return math.prod(shapes[inputs[2]]) * math.prod(shapes[inputs[1]][:3])
    return 0


def _peak(graph, ops: list, tensors: list, shapes: list[tuple], constant: set[int]) -> int:
    """The largest sum of live activation bytes at any node, in execution order."""
    end = len(ops)
    first = {int(t): -1 for t in graph.InputsAsNumpy()}
    last = {int(t): end for t in graph.OutputsAsNumpy()}
    for index, (_, inputs, outputs) in enumerate(ops):
        for t in outputs:
            first.setdefault(t, index)
        for t in inputs:
            last[t] = max(last.get(t, index), index)
    sizes = {t: math.prod(shapes[t]) * _ITEM_BYTES.get(tensors[t].Type(), 4)
             for t in first if t not in constant}
    live = np.zeros(end + 2, dtype=np.int64)  # index 0 stands for "before the first node"
    for t, size in sizes.items():
        live[first[t] + 1:last.get(t, first[t]) + 2] += size
    return int(live.max()) if len(live) else 0
