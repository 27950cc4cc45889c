import json

import numpy as np
import pytest

from kerascomp import runtime
from kerascomp.errors import DataError
from kerascomp.export import MIN_AGREEMENT, ExportError, export, file_sha256
from kerascomp.export.tflite import to_tflite


def _accuracy(logits, y):
    return float((logits.argmax(1) == y).mean())


@pytest.mark.parametrize("mode, int8_io, min_agreement", [
    ("none", False, 0.99), ("float16", False, 0.98), ("dynamic", False, 0.95),
    ("int8", False, 0.95), ("int8", True, 0.95), ("int16x8", False, 0.95),
])
def test_every_mode_converts_verifies_and_keeps_accuracy(tmp_path, digits, digits_model, mode, int8_io, min_agreement):
    source, model = digits_model
    out = tmp_path / f"m_{mode}.tflite"
    report = export(model, out, quantize=mode, data=digits, int8_io=int8_io, source=source)
    assert report["verification"]["passed"] and report["verification"]["top1_agreement"] >= min_agreement
    deployed = runtime.load(out)
    keras_accuracy = _accuracy(model.predict(digits.x_test, verbose=0), digits.y_test)
    assert abs(_accuracy(deployed.predict(digits.x_test), digits.y_test) - keras_accuracy) <= 0.02
    sidecar = json.loads((tmp_path / f"m_{mode}.tflite.json").read_text())
    assert sidecar["quantization"] == mode and sidecar["int8_io"] == int8_io
    assert sidecar["class_names"] == list(digits.class_names)
    assert sidecar["scaling"] == {"scale": 1 / 16, "offset": 0.0}
    assert sidecar["source_model"]["sha256"] == file_sha256(source)
    if int8_io:
        assert deployed.input_dtype == np.int8


def test_fp32_logits_match_keras_closely(tmp_path, digits, digits_model):
    _, model = digits_model
    report = export(model, tmp_path / "m.tflite", data=digits)
    assert report["verification"]["top1_agreement"] == 1.0
    assert report["verification"]["max_abs_diff"] < 1e-4


def test_integer_modes_shrink_the_file(tmp_path, digits, digits_model):
    _, model = digits_model
    fp32 = export(model, tmp_path / "a.tflite", data=digits)["size_bytes"]
    int8 = export(model, tmp_path / "b.tflite", quantize="int8", data=digits)["size_bytes"]
    assert int8 < 0.5 * fp32


def test_disagreeing_artifact_is_refused_and_not_written(tmp_path, digits, digits_model):
    _, model = digits_model
    out = tmp_path / "m.tflite"
    with pytest.raises(ExportError, match="not writing it"):
        export(model, out, quantize="int8", data=digits, min_agreement=1.01)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(quantize="int8"), ExportError, "needs --data"),
    (dict(quantize="dynamic", int8_io=True), ExportError, "needs --quantize int8"),
    (dict(quantize="bf8"), ExportError, "supports --quantize"),
    (dict(batch_size=0), ExportError, "at least 1"),
    (dict(batch_size=1, suffix=".onnx"), ExportError, "ONNX keeps it dynamic"),
])
def test_bad_conversion_requests_are_errors(tmp_path, digits_model, kwargs, error, message):
    _, model = digits_model
    out = tmp_path / f"m{kwargs.pop('suffix', '.tflite')}"
    with pytest.raises(error, match=message):
        export(model, out, **kwargs)
    assert not out.exists()


def test_a_fixed_batch_folds_run_time_shape_ops_out_of_the_graph(tmp_path, digits):
    from kerascomp import models

    vit = models.build("vit", (8, 8, 1), 10, patch_size=4, dim=16, depth=1, heads=2, mlp_dim=32)  # MHA, class token
    dynamic, static = tmp_path / "dynamic.tflite", tmp_path / "static.tflite"
    export(vit, dynamic, data=digits)
    export(vit, static, data=digits, batch_size=1)
    loose, fixed = runtime.load(dynamic), runtime.load(static)
    assert "SHAPE" in loose.kernels["ops"] and "SHAPE" not in fixed.kernels["ops"]
    assert fixed.kernels["nodes"] < loose.kernels["nodes"]
    assert fixed.kernels["partitions"] <= loose.kernels["partitions"]
    x = digits.x_test[:7]  # a fixed batch of 1 still predicts any number of samples
    np.testing.assert_allclose(fixed.predict(x), vit.predict(x, verbose=0), atol=1e-4)


def test_data_with_other_input_shape_is_rejected(tmp_path, image_npz, digits_model):
    from kerascomp.data import load_data

    _, model = digits_model
    with pytest.raises(DataError, match=r"has inputs \(12, 12, 1\) but the model expects inputs \(8, 8, 1\)"):
        export(model, tmp_path / "m.tflite", data=load_data(str(image_npz)))


def test_output_suffix_picks_the_format(tmp_path, digits_model):
    _, model = digits_model
    with pytest.raises(ExportError, match="must end in .tflite or .onnx"):
        export(model, tmp_path / "m.bin")


def test_pruned_model_is_stripped_and_converts(tmp_path, digits, digits_model):
    import tensorflow_model_optimization as tfmot

    from kerascomp.backend import keras

    _, model = digits_model
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    pruned = tfmot.sparsity.keras.prune_low_magnitude(clone)
    report = to_tflite(pruned, tmp_path / "p.tflite", sample=digits.x_val)
    to_tflite(model, tmp_path / "o.tflite", sample=digits.x_val)
    assert report["verification"]["top1_agreement"] == 1.0
    sizes = [sum(t.size for t in runtime.constant_tensors(tmp_path / name)) for name in ("p.tflite", "o.tflite")]
    assert sizes[0] == sizes[1]  # no mask or step variables left in the deployed file


def test_qat_model_converts_to_int8(tmp_path, digits, digits_model):
    import tensorflow_model_optimization as tfmot

    _, model = digits_model
    qat = tfmot.quantization.keras.quantize_model(model)
    report = to_tflite(qat, tmp_path / "q.tflite", quantize="int8", calibration=digits.x_train[:100], sample=digits.x_val)
    assert report["verification"]["top1_agreement"] >= 0.9


def test_qat_model_in_a_float_mode_is_checked_as_the_integer_model_it_becomes(tmp_path, digits, digits_model):
    import tensorflow_model_optimization as tfmot

    _, model = digits_model
    qat = tfmot.quantization.keras.quantize_model(model)
    qat.predict(digits.x_train[:256], verbose=0)
    report = to_tflite(qat, tmp_path / "q.tflite", sample=digits.x_val)
    assert report["verification"]["min_agreement"] == MIN_AGREEMENT["int8"]
    assert report["verification"]["top1_agreement"] >= 0.9


def test_a_converter_that_aborts_its_process_becomes_one_error_and_no_file(tmp_path, digits, digits_model,
                                                                           monkeypatch, capsys):
    """TF 2.21's converter SIGABRTs on the seed ViT in int16x8: the child process takes the crash, not kerascomp."""
    import signal
    import subprocess

    from kerascomp.cli import main

    source, _ = digits_model
    real_run = subprocess.run

    def aborting(command, **kwargs):  # the real child, killed the way the converter kills itself
        return real_run([command[0], "-c", "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"], **kwargs)

    monkeypatch.setattr(subprocess, "run", aborting)
    out = tmp_path / "m.tflite"
    assert main(["convert", str(source), "--quantize", "int16x8", "--data", "digits", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert f"crashed its process ({signal.SIGABRT.name})" in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_a_file_litert_cannot_run_is_refused_not_written(tmp_path, digits):
    """int16x8 has no SQUARED_DIFFERENCE kernel (LayerNorm's variance): the file converts but never runs."""
    from kerascomp.backend import tf

    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Flatten(), layers.Dense(16),
                                 layers.LayerNormalization(), layers.Dense(10)])
    with pytest.raises(ExportError, match="int16x8 file.* (does not run in LiteRT .*SQUARED_DIFFERENCE|crashed)"):
        export(model, tmp_path / "m.tflite", quantize="int16x8", data=digits, calibration_size=20)
    assert list(tmp_path.iterdir()) == []


def test_an_int8_conversion_keeps_the_converters_chatter_off_the_console(capfd, tmp_path, digits, digits_model):
    """The calibrator's C++ line and its UserWarning reached the console on every int8 conversion."""
    from kerascomp.cli import main

    assert main(["convert", str(digits_model[0]), "--data", "digits", "--quantize", "int8",
                 "--out", str(tmp_path / "m.tflite")]) == 0
    out, err = capfd.readouterr()
    assert "int8 ->" in out and "fully_quantize" not in out + err and "UserWarning" not in err
