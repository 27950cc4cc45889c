"""LiteRT Quantizer as the second post-training backend: recipes, ops kept in float, per-layer errors."""

import json

import numpy as np
import pytest

from kerascomp.backend import tf
from kerascomp.cli import main
from kerascomp.export import ExportError, export, litert_quantizer
from kerascomp.runtime import load


@pytest.fixture(scope="module")
def softmax_model(digits):
    """A user-style classifier ending in softmax: int8 SOFTMAX has no XNNPACK kernel."""
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"), layers.Flatten(),
                                 layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=3, verbose=0)
    return model


def _float_ops(path) -> dict:
    """op name -> how many of its nodes take a float32 activation (first input)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    counts: dict = {}
    for op in interpreter._get_ops_details():
        if len(op["inputs"]) and dtypes.get(int(op["inputs"][0])) == np.float32:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def test_auto_keeps_softmax_float_so_the_int8_file_is_one_xnnpack_partition(tmp_path, digits, softmax_model):
    converter = export(softmax_model, tmp_path / "c.tflite", quantize="int8", data=digits)
    quantizer = export(softmax_model, tmp_path / "q.tflite", quantize="int8", data=digits, backend="litert-quantizer")
    assert load(tmp_path / "c.tflite").kernels["outside_ops"] == {"SOFTMAX": 1}  # why the converter's file is split
    assert quantizer["keep_float"] == ["SOFTMAX"] and converter["keep_float"] == []
    kernels = load(tmp_path / "q.tflite").kernels
    assert kernels["partitions"] == 1 and kernels["outside_ops"] == {}
    assert _float_ops(tmp_path / "q.tflite").get("CONV_2D", 0) == 0  # the convolution itself is integer
    assert quantizer["verification"]["top1_agreement"] >= 0.95
    assert json.loads((tmp_path / "q.tflite.json").read_text())["backend"] == "litert-quantizer"


def test_keep_float_by_op_name_and_by_layer_regex(tmp_path, digits, digits_model):
    _, model = digits_model
    plain = export(model, tmp_path / "a.tflite", quantize="int8", data=digits, backend="litert-quantizer")
    assert plain["keep_float"] == [] and "CONV_2D" not in _float_ops(tmp_path / "a.tflite")
    export(model, tmp_path / "b.tflite", quantize="int8", data=digits, backend="litert-quantizer",
           keep_float=("CONV_2D",))
    assert _float_ops(tmp_path / "b.tflite")["CONV_2D"] == 4  # all four convolutions of the CNN
    export(model, tmp_path / "c.tflite", quantize="int8", data=digits, backend="litert-quantizer",
           keep_float=("block_1_",))
    assert _float_ops(tmp_path / "c.tflite")["CONV_2D"] == 2  # only the second block's two


def test_weight_only_int4_halves_the_int8_weights(tmp_path, digits, digits_model):
    _, model = digits_model
    sizes = {mode: export(model, tmp_path / f"{mode}.tflite", quantize=mode, data=digits,
                          backend="litert-quantizer")["size_bytes"] for mode in ("int8-weights", "int4-weights")}
    kernels = sum(w.size for layer in model.layers if hasattr(layer, "kernel") for w in [layer.kernel.numpy()])
    assert sizes["int8-weights"] - sizes["int4-weights"] >= 0.45 * kernels  # half a byte saved per weight
    accuracy = (load(tmp_path / "int4-weights.tflite").predict(digits.x_test).argmax(1) == digits.y_test).mean()
    assert accuracy > 0.9


def test_cli_layer_errors_table_plot_and_json(capsys, tmp_path, digits_model):
    source, _ = digits_model
    out, report = tmp_path / "m.tflite", tmp_path / "r.json"
    code = main(["convert", str(source), "--quantize", "int8", "--backend", "litert-quantizer", "--data", "digits",
                 "--layer-errors", "16", "--out", str(out), "--json", str(report)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads(report.read_text())["layer_errors"]
    assert sum(row["output"] for row in rows) == 1 and len(rows) >= 8  # 4 convs, 2 pools, mean, output at least
    assert all(row["snr_db"] > 10 and 0.9 < row["cosine"] <= 1.0 + 1e-6 for row in rows)
    assert "| layer | SNR (dB) | cosine |" in printed and "int8 (litert-quantizer)" in printed
    assert (tmp_path / "m.tflite.layers.png").stat().st_size > 0


def test_layer_errors_fall_where_the_damage_is(digits, digits_model):
    """A layer quantized to 4 bits shows up as the lowest SNR before the output; an 8-bit one does not."""
    _, model = digits_model
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    quantized, _ = litert_quantizer.quantize(float_model, "int8-weights", keep_float=())
    coarse = litert_quantizer._quantize(float_model, "int4-weights", None, ("block_0_",))  # only block_1 in 4 bits
    by_layer = {row["layer"]: row["snr_db"] for row in litert_quantizer.layer_errors(float_model, coarse,
                                                                                       digits.x_val[:16])}
    fine = {row["layer"]: row["snr_db"] for row in litert_quantizer.layer_errors(float_model, quantized,
                                                                                   digits.x_val[:16])}
    block_1 = [name for name in by_layer if "block_1" in name.split(";")[0]]
    assert block_1 and min(by_layer[name] for name in block_1) < min(fine[name] for name in block_1) - 6


@pytest.mark.parametrize("args, code, message", [
    (["--quantize", "int4-weights"], 1, "add --backend litert-quantizer"),
    (["--quantize", "int8", "--keep-float", "SOFTMAX"], 2, "apply to --backend litert-quantizer"),
    (["--quantize", "int8", "--backend", "litert-quantizer", "--keep-float", "("], 1, "nor a valid regex"),
    (["--quantize", "int8", "--backend", "litert-quantizer", "--int8-io"], 1, "--int8-io is the converter's"),
    (["--quantize", "float16", "--backend", "litert-quantizer", "--layer-errors", "4"], 1, "with a quantized mode"),
    (["--quantize", "auto", "--backend", "litert-quantizer"], 2, "tries both backends"),
])
def test_backend_refusals_write_nothing(capsys, tmp_path, digits_model, args, code, message):
    source, _ = digits_model
    assert main(["convert", str(source), *args, "--data", "digits", "--out", str(tmp_path / "m.tflite")]) == code
    error = capsys.readouterr().err
    assert message in error and list(tmp_path.iterdir()) == []


def test_a_quantization_aware_model_is_refused(tmp_path, digits, digits_model):
    import tensorflow_model_optimization as tfmot

    _, model = digits_model
    qat = tfmot.quantization.keras.quantize_model(tf.keras.models.clone_model(model))
    with pytest.raises(ExportError, match="carries its own ranges"):
        export(qat, tmp_path / "q.tflite", quantize="int8", data=digits, backend="litert-quantizer")
    assert not (tmp_path / "q.tflite").exists()


def test_bench_reads_int4_weights_as_their_codes(tmp_path):
    """int4 packs two codes per byte; the parameter count and the codes come back as written."""
    from kerascomp.runtime import constant_tensors

    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(16, use_bias=False)])
    weights = np.random.default_rng(0).choice([-7.0, -3.0, 2.0, 5.0, 7.0], size=(4, 16)).astype(np.float32)
    weights[:, 0] = 7.0  # every output channel's scale is 1: codes equal the weights
    weights[0, :] = 7.0
    model.layers[0].kernel.assign(weights)
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    quantized, _ = litert_quantizer.quantize(float_model, "int4-weights", keep_float=())
    (tmp_path / "m.tflite").write_bytes(quantized)
    codes, = [a for a in constant_tensors(tmp_path / "m.tflite") if a.size == 64]
    np.testing.assert_array_equal(codes, weights.T)
