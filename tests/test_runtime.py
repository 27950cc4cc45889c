"""Tests for the edge runtime: agreement with Keras, quantized I/O, batching, bad files, sidecars,
parameter counts read from the flatbuffer, and which kernels each op resolver runs."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from kerascomp import runtime
from kerascomp.backend import keras, tf
from kerascomp.errors import ConfigError, ModelError
from kerascomp.runtime.footprint import footprint
from kerascomp.runtime.kernels import kernel_record

SHAPE = (8, 8, 1)
CLASSES = [f"digit{i}" for i in range(10)]
SIDECAR = {"format": "tflite", "class_names": CLASSES, "input_shape": list(SHAPE),
           "scaling": {"scale": 0.0625, "offset": 0.0}}


def _inputs(n, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _write(path, content, meta=None):
    path.write_bytes(content)
    if meta is not None:
        (path.parent / (path.name + ".json")).write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def keras_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input(SHAPE),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(1)  # non-zero biases: the converter drops all-zero ones
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def files(keras_model, tmp_path_factory):
    """fp32 and full-int8 (int8 I/O) conversions of ``keras_model``, each with a sidecar."""
    root = tmp_path_factory.mktemp("tflite")
    fp32 = tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in _inputs(100, seed=2))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8 = converter.convert()
    return {
        "fp32": _write(root / "fp32.tflite", fp32, {**SIDECAR, "quantization": "none", "int8_io": False}),
        "int8": _write(root / "int8.tflite", int8, {**SIDECAR, "quantization": "int8", "int8_io": True}),
        "bare": _write(root / "bare.tflite", fp32),
    }


def test_fp32_predictions_match_keras_within_1e_4(keras_model, files):
    x = _inputs(64)
    logits = runtime.load(files["fp32"]).predict(x)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, keras_model.predict(x, verbose=0), atol=1e-4)


def test_int8_io_model_agrees_top1_with_keras_and_returns_dequantized_float32_logits(keras_model, files):
    model = runtime.load(files["int8"])
    x = _inputs(200, seed=3)
    logits, expected = model.predict(x), keras_model.predict(x, verbose=0)
    assert model.input_dtype is np.int8 and model.output_dtype is np.int8
    assert logits.dtype == np.float32 and logits.shape == (200, 10)
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= 0.9
    assert np.abs(logits - expected).max() < 0.1 * np.abs(expected).max()  # dequantized, not int8 codes


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_batched_predict_equals_per_sample_predict_including_partial_last_batch(files, kind):
    model = runtime.load(files[kind])
    x = _inputs(37, seed=4)
    per_sample = np.concatenate([model.predict(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(model.predict(x, batch_size=16), per_sample, atol=1e-6)


def test_quantize_input_then_run_gives_raw_int8_output_of_one_invoke(files):
    model = runtime.load(files["int8"])
    x = _inputs(1, seed=5)
    q = model.quantize_input(x)
    scale, zero_point = model.input_quantization
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, np.clip(np.round(x / scale) + zero_point, -128, 127))
    raw = model.run(q)
    assert raw.dtype == np.int8 and raw.shape == (1, 10)
    scale, zero_point = model.output_quantization
    np.testing.assert_allclose((raw.astype(np.float32) - zero_point) * scale, model.predict(x), atol=1e-6)


def test_sidecar_sets_class_names_scaling_and_quantization(files):
    model = runtime.load(files["int8"], threads=2)
    assert model.has_sidecar and model.meta["int8_io"] is True
    assert model.class_names == CLASSES and model.quantization == "int8" and model.threads == 2
    assert model.scaling == runtime.Scaling(0.0625, 0.0) and model.input_shape == SHAPE
    np.testing.assert_allclose(model.preprocess(np.full((1, *SHAPE), 16)), 1.0)


def test_missing_sidecar_gives_numbered_class_names_identity_scaling_and_no_sidecar_flag(files):
    model = runtime.load(files["bare"])
    assert not model.has_sidecar and model.meta is None
    assert model.class_names == [str(i) for i in range(10)]
    assert model.scaling == runtime.Scaling(1.0, 0.0) and model.quantization == "unknown"
    assert runtime.load(files["bare"], meta={"class_names": CLASSES}).class_names == CLASSES


def test_sidecar_naming_the_wrong_number_of_classes_raises_model_error(files):
    with pytest.raises(ModelError, match="names 3 classes, the model outputs 10"):
        runtime.load(files["bare"], meta={"class_names": ["a", "b", "c"]})


@pytest.mark.parametrize("content", ["truncated", "text", "random"])
def test_file_that_is_not_a_valid_flatbuffer_raises_model_error(files, tmp_path, content):
    data = {
        "truncated": files["fp32"].read_bytes()[:600],
        "text": b"this is not a model\n",
        "random": np.random.default_rng(0).bytes(4096),
    }[content]
    path = _write(tmp_path / "bad.tflite", data)
    for read in (runtime.load, runtime.constant_tensors):
        with pytest.raises(ModelError, match="bad.tflite is not a usable TFLite model"):
            read(path)


def test_missing_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such TFLite file"):
        runtime.load(tmp_path / "absent.tflite")


def test_input_of_the_wrong_shape_raises_model_error_naming_both_shapes(files):
    with pytest.raises(ModelError, match=r"model expects inputs \(8, 8, 1\), got \(32, 32, 3\)"):
        runtime.load(files["fp32"]).predict(np.zeros((2, 32, 32, 3), np.float32))


def test_importing_runtime_does_not_import_tensorflow():
    code = ("import sys, kerascomp.runtime; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'kerascomp.backend') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_constant_tensors_hold_exactly_the_keras_parameters(keras_model, files, kind):
    arrays = runtime.constant_tensors(files[kind])
    assert sum(a.size for a in arrays) == keras_model.count_params()
    weight_dtypes = {a.dtype for a in arrays if a.ndim > 1}
    assert weight_dtypes == {np.dtype(np.float32 if kind == "fp32" else np.int8)}


def _pruned_dense_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(64, "relu"), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in model.get_weights()]
    weights[0][rng.random(weights[0].shape) < 0.9] = 0.0
    model.set_weights(weights)
    return model


def test_constant_tensors_count_pruned_weights_as_zero(tmp_path):
    model = _pruned_dense_model()
    path = _write(tmp_path / "pruned.tflite", tf.lite.TFLiteConverter.from_keras_model(model).convert())
    arrays = runtime.constant_tensors(path)
    assert sum(a.size for a in arrays) == model.count_params()
    assert sum(np.count_nonzero(a) for a in arrays) == sum(np.count_nonzero(w) for w in model.get_weights())


def test_sparse_encoded_file_raises_model_error_instead_of_miscounting(tmp_path):
    converter = tf.lite.TFLiteConverter.from_keras_model(_pruned_dense_model())
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = _write(tmp_path / "sparse.tflite", converter.convert())
    with pytest.raises(ModelError, match="cannot decode parameter tensor .*sparse"):
        runtime.constant_tensors(path)
    assert runtime.load(path).predict(np.ones((2, 64), np.float32)).shape == (2, 10)


def test_classify_returns_sorted_top_k_sidecar_labels_with_probabilities(files):
    model = runtime.load(files["fp32"])
    raw = np.random.default_rng(6).integers(0, 17, (4, *SHAPE))
    results = model.classify(raw, top_k=3)
    expected = runtime.softmax(model.predict(model.preprocess(raw)))
    assert len(results) == 4
    for result, probs in zip(results, expected):
        labels, values = zip(*result)
        assert len(result) == 3 and set(labels) <= set(CLASSES)
        assert list(values) == sorted(values, reverse=True) and sum(values) <= 1 + 1e-6
        assert labels[0] == CLASSES[probs.argmax()]
    assert len(model.classify(raw[0], top_k=2)) == 1  # one image without a batch axis


def test_softmax_is_stable_for_large_logits():
    probs = runtime.softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5, 0.0]])


def _delegation(model):
    """``(delegate nodes, whether they cover the whole graph)`` as the interpreter lists its nodes.

    Read without kerascomp's graph walk: the delegates compute the whole graph when
    every graph output comes out of a delegate and every tensor a delegate reads is
    a graph input, a constant, or another delegate's output (never a tensor that a
    node left on the built-in kernels produced).
    """
    interpreter = model._interpreter
    ops = interpreter._get_ops_details()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    produced = {int(t) for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    delegate_out = {int(t) for op in delegates for t in op["outputs"]}
    delegate_in = {int(t) for op in delegates for t in op["inputs"] if t >= 0}
    graph_out = {d["index"] for d in interpreter.get_output_details()}
    whole = bool(delegates) and graph_out <= delegate_out and all(t in delegate_out or t not in produced
                                                                  for t in delegate_in)
    return delegates, whole


def _expected_kernel_path(model):
    delegates, whole = _delegation(model)
    return "builtin" if not delegates else "xnnpack" if whole else "xnnpack+builtin"


def _cumsum_file(tmp_path):
    """Dense -> CUMSUM -> Dense: an op that XNNPACK lacks today, between two it runs."""
    inputs = keras.layers.Input((8,))
    hidden = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=-1))(keras.layers.Dense(6)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    return _write(tmp_path / "cumsum.tflite", tf.lite.TFLiteConverter.from_keras_model(model).convert())


@pytest.mark.parametrize("kind", ["fp32", "int8"])
@pytest.mark.parametrize("op_resolver", ["auto", "builtin", "reference"])
def test_op_resolver_sets_kernel_path_and_all_paths_agree(files, kind, op_resolver):
    x = _inputs(16, seed=7)
    model = runtime.load(files[kind], op_resolver=op_resolver)
    delegates, _ = _delegation(model)
    if op_resolver == "auto":  # measured: whatever share of the graph the XNNPACK delegate took
        assert model.kernel_path == _expected_kernel_path(model)
        assert delegates or kind != "fp32"  # auto really applies the default delegate (a float Conv2D/Dense)
    else:  # fixed by the resolver, and really no delegate
        assert model.kernel_path == op_resolver and delegates == []
    reference = runtime.load(files[kind], op_resolver="reference").predict(x)
    tolerance = 1e-4 if kind == "fp32" else 2 * model.output_quantization[0]  # one int8 step either way
    np.testing.assert_allclose(model.predict(x), reference, atol=tolerance)


def test_kernel_path_of_a_graph_with_an_op_xnnpack_may_lack_follows_its_nodes(tmp_path):
    path = _cumsum_file(tmp_path)
    model = runtime.load(path)
    assert model.kernel_path == _expected_kernel_path(model)
    x = np.random.default_rng(10).random((5, 8), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), runtime.load(path, op_resolver="reference").predict(x), atol=1e-5)


def _node(index, op, inputs, outputs):
    return {"index": index, "op_name": op, "inputs": np.array(inputs), "outputs": np.array(outputs)}


@pytest.mark.parametrize("nodes, kernel_path", [
    # input 0, weights 1 and 2; no delegate at all
    ([_node(0, "FULLY_CONNECTED", [0, 1, -1], [3]), _node(1, "CUMSUM", [3], [4])], "builtin"),
    # one delegate for the whole graph: its inputs are the graph input and constants
    ([_node(0, "CONV_2D", [0, 1], [3]), _node(1, "RELU", [3], [4]), _node(2, "FULLY_CONNECTED", [4, 2], [5]),
      _node(3, "DELEGATE", [0, 1, 2], [5])], "xnnpack"),
    # two delegates back to back still cover every node
    ([_node(0, "FULLY_CONNECTED", [0, 1], [3]), _node(1, "FULLY_CONNECTED", [3, 2], [4]),
      _node(2, "DELEGATE", [0, 1], [3]), _node(3, "DELEGATE", [3, 2], [4])], "xnnpack"),
    # a built-in node between two delegated partitions
    ([_node(0, "FULLY_CONNECTED", [0, 1], [3]), _node(1, "CUMSUM", [3], [4]), _node(2, "FULLY_CONNECTED", [4, 2], [5]),
      _node(3, "DELEGATE", [0, 1], [3]), _node(4, "DELEGATE", [4, 2], [5])], "xnnpack+builtin"),
    # a built-in node after the delegated partition, producing the graph output
    ([_node(0, "FULLY_CONNECTED", [0, 1], [3]), _node(1, "RELU", [3], [4]), _node(2, "CUMSUM", [4], [5]),
      _node(3, "DELEGATE", [0, 1], [4])], "xnnpack+builtin"),
    # a built-in node before it, feeding the delegate
    ([_node(0, "CUMSUM", [0], [3]), _node(1, "FULLY_CONNECTED", [3, 1], [4]), _node(2, "DELEGATE", [3, 1], [4])],
     "xnnpack+builtin"),
])
def test_auto_kernel_path_is_xnnpack_only_when_every_node_was_delegated(nodes, kernel_path):
    interpreter = types.SimpleNamespace(_get_ops_details=lambda: nodes)
    assert kernel_record(interpreter, "auto")["path"] == kernel_path


def test_kernel_record_counts_partitions_and_the_ops_left_outside_them():
    nodes = [_node(0, "FULLY_CONNECTED", [0, 1], [3]), _node(1, "CUMSUM", [3], [4]),
             _node(2, "FULLY_CONNECTED", [4, 2], [5]), _node(3, "DELEGATE", [0, 1], [3]), _node(4, "DELEGATE", [4, 2], [5])]
    interpreter = types.SimpleNamespace(_get_ops_details=lambda: nodes)
    assert kernel_record(interpreter, "auto") == {
        "path": "xnnpack+builtin", "partitions": 2, "nodes": 3, "delegated_nodes": 2,
        "ops": {"FULLY_CONNECTED": 2, "CUMSUM": 1}, "outside_ops": {"CUMSUM": 1}}
    fixed = kernel_record(interpreter, "builtin")  # no delegate applies: every node is outside
    assert fixed["path"] == "builtin" and fixed["partitions"] == 0 and fixed["outside_ops"] == fixed["ops"]


def test_model_with_a_fixed_batch_predicts_batches_one_sample_per_invoke(tmp_path):
    weights = np.random.default_rng(8).normal(size=(16, 3)).astype("float32")

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4], tf.float32)])
    def logits(x):
        return tf.matmul(tf.reshape(x, [1, 16]), weights)  # the batch of 1 is baked into the graph

    converter = tf.lite.TFLiteConverter.from_concrete_functions([logits.get_concrete_function()], logits)
    model = runtime.load(_write(tmp_path / "fixed.tflite", converter.convert()))
    x = np.random.default_rng(9).random((5, 4, 4), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x), x.reshape(5, 16) @ weights, rtol=1e-5, atol=1e-5)
    assert not model._resizable


@pytest.mark.parametrize("kwargs, message", [
    ({"op_resolver": "gpu"}, "unknown op_resolver 'gpu'"),
    ({"threads": 0}, "threads must be an integer >= 1"),
])
def test_bad_load_arguments_raise_config_error(files, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        runtime.load(files["fp32"], **kwargs)


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_footprint_counts_the_keras_models_macs_and_the_live_activations(keras_model, files, kind):
    """MACs: the conv's output positions x its kernel, plus the Dense; the activation peak: the conv's input and
    output live together at the conv (the flatten's reshape reads and writes beside them in float32 files)."""
    height, width, channels = SHAPE
    out_positions = (height - 2) * (width - 2)
    expected_macs = out_positions * 9 * channels * 4 + out_positions * 4 * 10
    result = footprint(files[kind])
    assert result["macs"] == expected_macs
    item = 4 if kind == "fp32" else 1
    conv_in, conv_out = height * width * channels * item, out_positions * 4 * item
    assert result["peak_activation_bytes"] >= conv_in + conv_out
    assert result["peak_activation_bytes"] <= conv_in + 2 * conv_out + 10 * 4


def test_footprint_reads_the_shapes_a_graph_computes_at_run_time(tmp_path):
    """Keras attention lowers to reshapes whose shapes are computed at run time: the file stores placeholders, the
    interpreter resolves them. Projections (4 x 6 positions x 8 x 8), QK^T and AV (2 heads x 6 x 6 x 4 each) and
    the Dense head (6 x 8 x 3)."""
    inp = keras.Input((6, 8))
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    model = keras.Model(inp, keras.layers.Dense(3)(attended))
    path = tmp_path / "attention.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert footprint(path)["macs"] == 4 * 6 * 8 * 8 + 2 * (2 * 6 * 6 * 4) + 6 * 8 * 3
