"""QAT: loads without scope, converts to int8, preserves sparsity and clusters, float fallback, CLI errors."""

import numpy as np
import pytest

from kerascomp._compat import keras
from kerascomp.cli import main
from kerascomp.compress import _tfmot, quantize
from kerascomp.compress.sensitivity import magnitude_mask
from kerascomp.errors import ConfigError, ModelError
from kerascomp.export import export
from kerascomp.saving import load_model, save_model

KERNELS = ("block_0_conv1", "block_0_conv2", "block_1_conv1", "block_1_conv2", "logits")
FAST = dict(epochs=1, verbose=0)


def _edited(model, edit):
    """A copy of ``model`` whose kernels are replaced by ``edit(kernel)``."""
    copy = _tfmot.clone(model)
    for name in KERNELS:
        kernel, *rest = copy.get_layer(name).get_weights()
        copy.get_layer(name).set_weights([edit(kernel), *rest])
    return copy


def _round_trip_and_int8(model, tmp_path, digits, name):
    loaded = load_model(save_model(model, tmp_path / f"{name}.keras"))  # no user scope
    np.testing.assert_allclose(loaded.predict(digits.x_val, verbose=0), model.predict(digits.x_val, verbose=0),
                               atol=1e-5)
    report = export(loaded, tmp_path / f"{name}.tflite", quantize="int8", data=digits, calibration_size=100)
    assert report["verification"]["top1_agreement"] >= 0.9
    return loaded


def test_pqat_model_keeps_the_zeros_loads_without_scope_and_converts_to_int8(tmp_path, digits, digits_model):
    _, model = digits_model
    sparse = _edited(model, lambda k: k * magnitude_mask(k, 0.6))
    before = [w.copy() for w in sparse.get_weights()]
    qat, metrics = quantize.apply(sparse, digits, quantize.QATConfig(preserve="sparsity", **FAST))
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat.layers)
    assert metrics["scheme"] == "sparsity" and metrics["float_layers"] == [] and metrics["test_accuracy"] > 0.5
    assert metrics["kernel_sparsity"]["before"] == pytest.approx(0.6, abs=0.01)
    assert metrics["kernel_sparsity"]["after"] == pytest.approx(metrics["kernel_sparsity"]["before"])
    assert all(np.array_equal(a, b) for a, b in zip(before, sparse.get_weights()))
    _round_trip_and_int8(qat, tmp_path, digits, "pqat")


def test_cqat_keeps_clusters_per_channel_and_loads(tmp_path, digits, digits_model):
    _, model = digits_model

    def four_levels(kernel):
        levels = np.linspace(kernel.min(), kernel.max(), 4)
        return levels[np.abs(kernel[..., None] - levels).argmin(-1)].astype(kernel.dtype)

    clustered = _edited(model, four_levels)
    qat, metrics = quantize.apply(clustered, digits, quantize.QATConfig(preserve="clusters", **FAST))
    loaded = _round_trip_and_int8(qat, tmp_path, digits, "cqat")
    kernel = loaded.get_layer("quant_block_1_conv2").weights[0].numpy()  # tfmot clusters conv kernels per channel
    assert max(len(np.unique(kernel[..., c])) for c in range(kernel.shape[-1])) <= 4


def _with_layer_norm():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_unsupported_layers_fail_clearly_or_stay_float_with_the_fallback(tmp_path, digits):
    model = _with_layer_norm()
    with pytest.raises(ModelError, match="norm .*LayerNormalization.*--float-fallback"):
        quantize.plan(model, quantize.QATConfig())
    plans = {p.name: p for p in quantize.plan(model, quantize.QATConfig(float_fallback=True))}
    assert plans["norm"].action == "skip" and plans["hidden"].action == "quantize"
    qat, metrics = quantize.apply(model, digits, quantize.QATConfig(float_fallback=True, **FAST))
    assert metrics["float_layers"] == ["norm"]
    assert type(qat.get_layer("norm")).__name__ == "LayerNormalization"
    _round_trip_and_int8(qat, tmp_path, digits, "fallback")


@pytest.mark.parametrize("kwargs", [dict(preserve="weights"), dict(epochs=0), dict(alpha=2.0), dict(temperature=0)])
def test_bad_qat_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        quantize.QATConfig(**kwargs)


def test_cli_qat_refuses_foreign_files_and_unsupported_models_writing_nothing(capsys, tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_text("not a model")
    unsupported = save_model(_with_layer_norm(), tmp_path / "ln.keras")
    for source, message in ((garbage, "Error: cannot load"), (unsupported, "--float-fallback")):
        code = main(["qat", str(source), "--out", str(tmp_path / "q.keras")])
        stderr = capsys.readouterr().err
        assert code == 1 and stderr.startswith("Error:") and message in stderr
    code = main(["qat", str(unsupported), "--preserve", "everything"])
    assert code == 2 and not (tmp_path / "q.keras").exists() and not (tmp_path / "ln_qat.keras").exists()
