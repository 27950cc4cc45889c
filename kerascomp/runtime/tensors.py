"""A ``.tflite`` file's constant tensors and ops, read from its flatbuffer without running it.

How kerascomp counts a deployed file's parameters and non-zero weights (int8,
int4 and float buffers dequantized alike) and lists its ops, with LiteRT's
schema and numpy only.
"""

from __future__ import annotations

import os

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from kerascomp.errors import ModelError, first_line

__all__ = ["constant_tensors", "op_names", "check_sizes", "MAX_TENSOR_BYTES"]

_BUILTIN = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # no delegate: reading, not timing
MAX_TENSOR_BYTES = 2**31  # no tensor of a model a device runs is 2 GiB; a damaged file's dimensions can ask for more

_DTYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.FLOAT64: np.float64,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.UINT16: np.uint16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT32: np.uint32,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.UINT64: np.uint64,
}
_FLOATS = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16, schema.TensorType.FLOAT64, schema.TensorType.BFLOAT16}


def constant_tensors(path: str | os.PathLike) -> list[np.ndarray]:
    """The parameter tensors of a ``.tflite`` file, read from its flatbuffer, one array each.

    Summing ``a.size`` gives the parameter count of the deployed file and
    ``np.count_nonzero(a)`` its non-zero parameters. The interpreter cannot
    tell constants from activations once a delegate owns the graph, so the
    file itself is parsed with the schema module that ai_edge_litert ships.

    A parameter is a tensor with data in the file that is either floating
    point or quantized (it has a scale): float weights and biases, int8
    weights (one parameter each), int32/int64 quantized biases. Unquantized
    integer constants (reshape shapes, axes, paddings) are indices, not
    parameters. A buffer shared by several tensors counts once, as it is
    stored once (the converter also merges byte-identical constants). Arrays hold
    the stored numbers (float16 in float16 models, integer codes in quantized
    ones); a quantized tensor with a non-zero zero point comes back as codes
    minus that zero point, so that zero still means a real 0.

    The count can differ from Keras's ``count_params``: the converter folds
    BatchNormalization into the preceding convolution, drops all-zero biases,
    and keeps folded scalar constants (e.g. a Rescaling layer's scale).

    Raises:
      ModelError: the file is missing or not a TFLite model, or holds a
        parameter this function cannot decode (a sparse-encoded tensor, or a
        type it does not know; int4 codes come back as int8).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        Interpreter(model_content=data, experimental_op_resolver_type=_BUILTIN)  # the verifier
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ModelError(f"{path} is not a usable TFLite model: {first_line(e)}") from None
    model = schema.Model.GetRootAs(data, 0)
    arrays, seen = [], set()
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            raw = _buffer_bytes(data, model.Buffers(tensor.Buffer())) if tensor.Buffer() else None
            if raw is None or tensor.Buffer() in seen:
                continue
            quant = tensor.Quantization()
            quantized = quant is not None and not quant.ScaleIsNone()
            if tensor.Type() not in _FLOATS and not quantized:
                continue
            name = tensor.Name().decode()
            int4 = tensor.Type() == schema.TensorType.INT4
            if (tensor.Type() not in _DTYPES and not int4) or tensor.Sparsity() is not None:
                raise ModelError(f"{path}: cannot decode parameter tensor {name!r} (sparse or unsupported type)")
            seen.add(tensor.Buffer())
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            values = (_int4(raw, int(np.prod(shape))) if int4 else np.frombuffer(raw, dtype=_DTYPES[tensor.Type()]))
            values = values.reshape(shape)
            zero_point = _zero_point(quant, values.ndim) if quantized else 0
            arrays.append(values.astype(np.int64) - zero_point if np.any(zero_point) else values)
    return arrays


def _int4(raw: bytes, count: int) -> np.ndarray:
    """Signed 4-bit codes packed two per byte, low nibble first (LiteRT's layout), as int8."""
    packed = np.frombuffer(raw, dtype=np.uint8)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
    return (nibbles ^ 8) - 8  # sign-extend: 8..15 are -8..-1


def _buffer_bytes(data: bytes, buffer) -> bytes | None:
    """A buffer's bytes, inline or (models over 2 GB) at an offset in the file; None when empty."""
    if buffer.Offset() > 1:
        return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    return None if buffer.DataIsNone() or buffer.DataLength() == 0 else buffer.DataAsNumpy().tobytes()


def _zero_point(quant, ndim: int) -> np.ndarray | int:
    """The zero point(s), shaped to broadcast along the quantized axis; 0 for symmetric tensors."""
    zero_points = quant.ZeroPointAsNumpy() if quant.ZeroPointLength() else 0
    if not np.any(zero_points):
        return 0
    if zero_points.size == 1:
        return int(zero_points[0])
    shape = [1] * ndim
    shape[quant.QuantizedDimension()] = -1
    return zero_points.reshape(shape)


def op_names(path: str | os.PathLike) -> list[str]:
    """The op of every node of a ``.tflite`` file, in execution order, before any delegate takes them."""
    interpreter = Interpreter(model_path=os.fspath(path), experimental_op_resolver_type=_BUILTIN)
    interpreter.allocate_tensors()
    return [op["op_name"] for op in interpreter._get_ops_details()]  # the only view of the nodes in the Python API


def check_sizes(path: str | os.PathLike) -> None:
    """ModelError where a tensor of the file declares more than :data:`MAX_TENSOR_BYTES`, before the interpreter
    allocates it: a damaged dimension would otherwise ask the machine for terabytes and the process be killed.
    A file that is not a flatbuffer at all is left to the interpreter's own verifier."""
    try:
        with open(path, "rb") as handle:
            model = schema.Model.GetRootAs(handle.read(), 0)
        shapes = [model.Subgraphs(g).Tensors(t).ShapeAsNumpy() for g in range(model.SubgraphsLength())
                  for t in range(model.Subgraphs(g).TensorsLength())]
    except Exception:  # noqa: BLE001 (the generated reader fails on damage in many ways: the verifier names it)
        return
    for shape in shapes:
        if isinstance(shape, np.ndarray) and shape.size and \
                float(np.prod(np.maximum(shape.astype(np.float64), 1))) * 8 > MAX_TENSOR_BYTES:
            raise ModelError(f"{path} declares a tensor of shape {tuple(int(d) for d in shape)}: not a model a "
                             "device can run (a damaged file?)")
