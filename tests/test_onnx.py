"""Tests for ONNX export: onnxruntime agrees with Keras, broken conversions leave no file,
onnxruntime's int8 peer stays close to the float model, and parameter counting."""

import numpy as np
import onnx
import pytest

from kerascomp import models
from kerascomp._compat import keras
from kerascomp.errors import ModelError
from kerascomp.export._verify import ExportError
from kerascomp.export.onnx import OnnxModel, onnx_constant_params, quantize_onnx_int8, to_onnx

DIGITS = (8, 8, 1)
SMALL_VIT = {"patch_size": 4, "dim": 32, "depth": 1, "heads": 2, "mlp_dim": 32}


@pytest.fixture(scope="module")
def cnn(digits):
    """A briefly trained cnn, so batch norm statistics and biases are not at their initial values."""
    keras.utils.set_random_seed(0)
    model = models.build("cnn", DIGITS, 10, width=8)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def cnn_onnx(cnn, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    return path, to_onnx(cnn, path, sample=digits.x_test)


@pytest.fixture(scope="module")
def cnn_int8(cnn_onnx, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx_int8") / "cnn_int8.onnx"
    return path, quantize_onnx_int8(cnn_onnx[0], path, digits.x_train[:200])


def test_cnn_export_matches_keras_within_1e4_with_full_agreement(cnn, cnn_onnx, digits):
    path, report = cnn_onnx
    assert report["path"] == str(path) and report["opset"] == 17
    assert report["verification"]["top1_agreement"] == 1.0
    assert report["verification"]["max_abs_diff"] < 1e-4
    np.testing.assert_allclose(OnnxModel(path).predict(digits.x_test), cnn.predict(digits.x_test, verbose=0), atol=1e-4)


@pytest.mark.parametrize("block", ["standard", "simplified"])
def test_vit_with_approximate_gelu_matches_keras_within_1e4(block, tmp_path):
    model = models.build("vit", DIGITS, 10, block=block, gelu_approximate=True, **SMALL_VIT)
    report = to_onnx(model, tmp_path / "vit.onnx")
    assert report["verification"]["samples"] == 64
    assert report["verification"]["top1_agreement"] == 1.0
    assert report["verification"]["max_abs_diff"] < 1e-4


def test_exact_gelu_vit_raises_export_error_suggesting_gelu_approximate_and_writes_nothing(tmp_path):
    model = models.build("vit", DIGITS, 10, **SMALL_VIT)
    with pytest.raises(ExportError, match=r"Erfc.*gelu_approximate=True") as info:
        to_onnx(model, tmp_path / "vit.onnx")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_leaves_no_file_and_keeps_an_existing_one(cnn, tmp_path):
    fresh, existing = tmp_path / "fresh.onnx", tmp_path / "existing.onnx"
    existing.write_bytes(b"previous")
    for path in (fresh, existing):
        with pytest.raises(ExportError, match="agrees"):
            to_onnx(cnn, path, min_agreement=1.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.onnx"]
    assert existing.read_bytes() == b"previous"


def test_onnx_model_batch_predict_equals_per_sample_run(cnn_onnx, digits):
    model = OnnxModel(cnn_onnx[0], threads=2)
    assert model.input_shape == DIGITS and model.threads == 2
    x = digits.x_test[:20]
    batched = model.predict(x, batch_size=8)
    single = np.concatenate([model.run(x[i : i + 1]) for i in range(len(x))])
    assert batched.dtype == np.float32 and batched.shape == (20, 10)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_int8_qdq_model_agrees_with_float_on_90_percent_of_digits_and_is_smaller(cnn_onnx, cnn_int8, digits):
    path, quantized, report = cnn_onnx[0], *cnn_int8
    assert report["path"] == str(quantized) and report["verification"]["passed"]
    float_top1 = OnnxModel(path).predict(digits.x_test).argmax(1)
    int8_top1 = OnnxModel(quantized).predict(digits.x_test).argmax(1)
    assert (float_top1 == int8_top1).mean() >= 0.9
    assert quantized.stat().st_size < path.stat().st_size
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


@pytest.mark.parametrize("content", [None, b"not an onnx file"])
def test_missing_or_corrupt_file_raises_one_line_model_error(content, tmp_path):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    for load in (OnnxModel, onnx_constant_params):
        with pytest.raises(ModelError, match="model.onnx") as info:
            load(path)
        assert "\n" not in str(info.value)


def test_float_param_count_is_keras_count_less_three_vectors_per_folded_batch_norm(cnn, cnn_onnx):
    bn_channels = sum(
        layer.gamma.shape[0] for layer in cnn.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    params = onnx_constant_params(cnn_onnx[0])
    assert sum(p.size for p in params) == cnn.count_params() - 3 * bn_channels


def test_int8_param_count_counts_quantized_weights_not_scales(cnn_onnx, cnn_int8):
    float_params = onnx_constant_params(cnn_onnx[0])
    int8_params = onnx_constant_params(cnn_int8[0])
    assert sum(p.size for p in int8_params) == sum(p.size for p in float_params)
    assert {p.dtype for p in int8_params} == {np.dtype(np.int8), np.dtype(np.int32)}
