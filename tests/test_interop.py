"""Bring your own model: Keras 3 and .h5 files imported into tf_keras, checked, and exported back."""

import json

import keras as keras3
import numpy as np
import pytest

from kerascomp.backend import keras
from kerascomp.errors import ModelError
from kerascomp.files import scaling_of
from kerascomp.interop import TOLERANCE, check_parity, detect_format, import_model, load_keras3, rebuild, save_keras3
from kerascomp.saving import load_with_data, save_model

L = keras3.layers


def _randomize(model, seed=0):
    """Random weights everywhere (variances positive), so a wrong copy cannot agree by chance."""
    rng = np.random.default_rng(seed)
    model.set_weights([np.abs(rng.normal(0.5, 0.3, w.shape)).astype(w.dtype) + 0.1 if "variance" in v.path
                       else rng.normal(0, 0.3, w.shape).astype(w.dtype)
                       for w, v in zip(model.get_weights(), model.weights)])
    return model


def _image_model(*layers, shape=(12, 12, 3)):
    inp = keras3.Input(shape)
    h = inp
    for layer in layers:
        h = layer(h)
    return keras3.Model(inp, L.Dense(5)(L.Flatten()(h)))


def _merges():
    inp = keras3.Input((6,))
    a, b = L.Dense(4)(inp), L.Dense(4)(inp)
    merged = [L.Add()([a, b]), L.Subtract()([a, b]), L.Multiply()([a, b]), L.Average()([a, b]),
              L.Maximum()([a, b]), L.Minimum()([a, b])]
    return keras3.Model(inp, L.Dense(3)(L.Concatenate()(merged)))


def _sequence():
    tokens = keras3.Input((7,), dtype="int32")
    h = L.Embedding(20, 8)(tokens)
    h = L.MultiHeadAttention(2, 4)(h, h)
    h = L.LayerNormalization()(h)
    h = L.Conv1D(6, 3, padding="same")(h)
    h = L.MaxPooling1D()(h)
    return keras3.Model(tokens, L.Dense(4)(L.GlobalAveragePooling1D()(h)))


def _normalization():
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(1).normal(3, 2, (50, 12, 12, 3)).astype("float32"))
    return _image_model(L.Rescaling(0.5, offset=-1), norm, L.Resizing(10, 10), L.CenterCrop(8, 8), L.Conv2D(3, 3))


FAMILIES = {
    "dense+activations": lambda: keras3.Sequential([
        keras3.Input((6,)), L.Dense(8, activation="gelu"), L.ReLU(max_value=3.0), L.Dense(8), L.LeakyReLU(0.2),
        L.Dense(8), L.PReLU(), L.Dense(8), L.ELU(), L.Dense(8, activation="swish"), L.Activation("tanh"),
        L.Dense(4), L.Softmax()]),
    "convolutions": lambda: _image_model(
        L.Conv2D(4, 3, padding="same", activation="relu"), L.DepthwiseConv2D(3, padding="same"),
        L.SeparableConv2D(4, 3), L.Conv2DTranspose(3, 3, strides=2)),
    "conv1d/3d": lambda: keras3.Sequential([
        keras3.Input((4, 6, 6, 2)), L.Conv3D(3, 2), L.MaxPooling3D(1), L.AveragePooling3D(1),
        L.GlobalAveragePooling3D(), L.Dense(2)]),
    "normalization": lambda: _image_model(L.Conv2D(4, 3), L.BatchNormalization(), L.GroupNormalization(2),
                                          L.LayerNormalization()),
    "pooling": lambda: _image_model(L.MaxPooling2D(), L.AveragePooling2D(2, padding="same"), L.GlobalMaxPooling2D(
        keepdims=True), L.GlobalAveragePooling2D(keepdims=True)),
    "reshaping": lambda: _image_model(L.ZeroPadding2D(1), L.Cropping2D(2), L.UpSampling2D(), L.Permute((2, 1, 3)),
                                      L.Reshape((20 * 20, 3)), L.Reshape((20, 20, 3))),
    "merges": _merges,
    "embedding+attention": _sequence,
    "preprocessing": _normalization,
    "regularization and augmentation": lambda: _image_model(
        L.RandomFlip(), L.RandomRotation(0.1), L.Conv2D(4, 3), L.Dropout(0.5), L.SpatialDropout2D(0.3),
        L.GaussianNoise(0.2)),
}


def _inputs(model, n=6):
    rng = np.random.default_rng(2)
    shape = tuple(model.inputs[0].shape[1:])
    if "int" in str(model.inputs[0].dtype):
        return rng.integers(0, 20, (n, *shape)).astype("int32")
    return rng.normal(size=(n, *shape)).astype("float32")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_keras3_layer_family_round_trips_within_tolerance(family, tmp_path):
    path = tmp_path / "m.keras"
    _randomize(FAMILIES[family]()).save(path)
    model3 = keras3.models.load_model(path)  # what the user's file holds
    model, meta = import_model(path)
    x = _inputs(model3)
    expected = np.asarray(model3(x, training=False))
    got = model(x, training=False).numpy()
    if meta["import"]["output_activation"] == "softmax":
        got = np.exp(got - got.max(1, keepdims=True))
        got /= got.sum(1, keepdims=True)
    assert isinstance(model, keras.Model) and meta["import"]["format"] == "keras3"
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    assert meta["import"]["max_abs_diff"] <= TOLERANCE
    dropped = {d["class"] for d in meta["import"]["dropped"]}
    assert dropped == ({"RandomFlip", "RandomRotation"} if family.startswith("regularization") else set())


def test_nested_and_shared_layers_become_one_flat_graph(tmp_path):
    block = keras3.Sequential([keras3.Input((8,)), L.Dense(8, name="dense"), L.ReLU()], name="block")
    inner_in = keras3.Input((8,))
    inner = keras3.Model(inner_in, L.Dense(8, name="dense")(inner_in), name="inner")  # a clashing layer name
    shared = L.Dense(8, name="shared")
    inp = keras3.Input((8,))
    h = shared(block(inp))
    h = shared(inner(h))  # the same layer called twice keeps one set of weights
    model3 = _randomize(keras3.Model(inp, L.Dense(3)(h)))
    model3.save(tmp_path / "nested.keras")
    model, _ = import_model(tmp_path / "nested.keras")
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert len({layer.name for layer in model.layers}) == len(model.layers)
    assert sum(layer.name == "shared" for layer in model.layers) == 1
    x = _inputs(model3)
    np.testing.assert_allclose(model(x).numpy(), np.asarray(model3(x)), atol=TOLERANCE)


def test_unsupported_layers_are_listed_together_before_loading(tmp_path):
    @keras3.saving.register_keras_serializable(package="tests")
    class Doubler(L.Layer):
        def call(self, x):
            return 2 * x

    inp = keras3.Input((4,))
    h = L.Lambda(lambda t: t + 1, name="plus_one")(L.Dense(4)(inp))
    model3 = keras3.Model(inp, Doubler(name="doubler")(h))
    model3.save(tmp_path / "custom.keras")
    with pytest.raises(ModelError) as info:
        import_model(tmp_path / "custom.keras")
    message = str(info.value)
    assert "2 layer(s)" in message and "plus_one (Lambda" in message and "doubler (Doubler" in message


def test_subclassed_model_is_refused_with_what_to_do(tmp_path):
    @keras3.saving.register_keras_serializable(package="tests")
    class Tiny(keras3.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    model3 = Tiny()
    model3(np.zeros((1, 3), "float32"))
    model3.save(tmp_path / "sub.keras")
    with pytest.raises(ModelError, match="subclassed model.*functional API"):
        import_model(tmp_path / "sub.keras")


def test_parity_failure_names_the_first_layer_that_differs(tmp_path):
    model3 = _randomize(keras3.Sequential([keras3.Input((5,)), L.Dense(4, name="first"), L.Dense(3, name="second"),
                                           L.Dense(2, name="third")]))
    model3.save(tmp_path / "m.keras")
    built = rebuild(load_keras3(tmp_path / "m.keras"))
    layer = built.model.get_layer("second")
    layer.set_weights([w + 0.5 for w in layer.get_weights()])
    with pytest.raises(ModelError, match="first at layer second"):
        check_parity(model3, built, _inputs(model3))


def test_formats_are_read_from_the_files_not_their_names(tmp_path):
    model3 = keras3.Sequential([keras3.Input((3,)), L.Dense(2)])
    model3.save(tmp_path / "k3.keras")
    (tmp_path / "k3.keras").rename(tmp_path / "renamed.h5")
    tf_model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    tf_model.save(tmp_path / "tf.keras")
    tf_model.save(tmp_path / "legacy.h5", save_format="h5")
    (tmp_path / "junk.keras").write_text("not a model")
    assert detect_format(tmp_path / "renamed.h5")[0] == "keras3"
    assert detect_format(tmp_path / "tf.keras")[0] == "tf_keras"
    assert detect_format(tmp_path / "legacy.h5")[0] == "h5"
    with pytest.raises(ModelError, match="neither"):
        detect_format(tmp_path / "junk.keras")
    model, meta = import_model(tmp_path / "legacy.h5")
    np.testing.assert_allclose(model.predict(np.ones((2, 3)), verbose=0), tf_model.predict(np.ones((2, 3)), verbose=0),
                               atol=1e-6)
    assert meta["import"]["format"] == "h5"


def test_softmax_output_is_split_off_and_put_back_on_the_way_to_keras3(tmp_path):
    model3 = _randomize(keras3.Sequential([keras3.Input((6,)), L.Dense(8, activation="relu"),
                                           L.Dense(4, activation="softmax")]))
    model3.save(tmp_path / "m.keras")
    model, meta = import_model(tmp_path / "m.keras")
    assert meta["import"]["output_activation"] == "softmax"
    x = _inputs(model3)
    logits = model.predict(x, verbose=0)
    assert not np.allclose(logits.sum(1), 1.0)  # logits now, not probabilities
    save_keras3(model, tmp_path / "back.keras", output_activation="softmax", sample=x)
    back = keras3.models.load_model(tmp_path / "back.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(model3(x)), atol=TOLERANCE)
    assert detect_format(tmp_path / "back.keras")[0] == "keras3"


def test_input_preprocessing_means_raw_pixels(tmp_path, digits):
    model3 = keras3.Sequential([keras3.Input((8, 8, 1)), L.Rescaling(1 / 16), L.Flatten(), L.Dense(10)])
    model3.save(tmp_path / "m.keras")
    _, meta = import_model(tmp_path / "m.keras", digits)
    assert meta["scaling"] == {"scale": 1.0, "offset": 0.0}
    assert [p["class"] for p in meta["import"]["preprocessing"]] == ["Rescaling"]
    raw = digits.with_scaling(meta["scaling"])
    assert raw.x_val.max() == 16.0 and np.allclose(raw.x_val / 16, digits.x_val)
    assert raw.with_scaling(digits.scaling).x_val == pytest.approx(digits.x_val)


def test_the_scaling_a_sidecar_records_is_read_from_old_and_new_files(tmp_path, digits):
    """Sidecars keep the scaling at the top level; files written before kept it only under data.scaling."""
    model3 = keras3.Sequential([keras3.Input((8, 8, 1)), L.Rescaling(1 / 16), L.Flatten(), L.Dense(10)])
    model3.save(tmp_path / "m.keras")
    model, meta = import_model(tmp_path / "m.keras", digits)
    save_model(model, tmp_path / "new.keras", meta={**meta, "data": digits.with_scaling(meta["scaling"]).describe()})
    assert json.loads((tmp_path / "new.keras.json").read_text())["scaling"] == {"scale": 1.0, "offset": 0.0}
    old = {key: value for key, value in json.loads((tmp_path / "new.keras.json").read_text()).items() if key != "scaling"}
    (tmp_path / "new.keras.json").write_text(json.dumps(old))
    assert scaling_of(old) == {"scale": 1.0, "offset": 0.0}
    _, _, raw = load_with_data(tmp_path / "new.keras", digits)
    assert raw.x_val.max() == 16.0


def test_inspect_json_reports_layers_techniques_and_ops(tmp_path):
    from kerascomp.analysis.inspect import inspect_model

    model3 = keras3.Sequential([keras3.Input((8, 8, 1)), L.Rescaling(1 / 16), L.Conv2D(4, 3), L.BatchNormalization(),
                                L.LayerNormalization(), L.Flatten(), L.Dense(10, activation="softmax")])
    model3.save(tmp_path / "m.keras")
    report = inspect_model(tmp_path / "m.keras")
    json.dumps(report)  # the contract is JSON
    assert report["format"] == "keras3" and report["output_activation"] == "softmax"
    assert report["input_shape"] == [8, 8, 1] and report["params"] == model3.count_params()
    layers = {layer["name"]: layer for layer in report["layers"]}
    conv = next(name for name in layers if name.startswith("conv2d"))
    assert layers[conv]["prune"] == layers[conv]["cluster"] == layers[conv]["qat"] == "yes"
    norm = next(name for name in layers if name.startswith("layer_normalization"))
    assert layers[norm]["qat"].startswith("no:")
    assert report["preprocessing"][0]["class"] == "Rescaling" and report["input_scaling"] is not None
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(report["tflite_ops"])


def test_inspect_says_raw_pixels_only_for_a_model_that_scales_them_itself(tmp_path, digits_model):
    from kerascomp.analysis.inspect import format_inspection, inspect_model

    model3 = keras3.Sequential([keras3.Input((8, 8, 1)), L.Rescaling(1 / 16), L.Flatten(), L.Dense(10)])
    model3.save(tmp_path / "m.keras")
    assert "input: raw pixels (the model scales them itself)" in format_inspection(inspect_model(tmp_path / "m.keras"))
    assert "input: raw pixels x 0.0625 + 0 (as trained)" in format_inspection(inspect_model(digits_model[0]))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_runs_no_code_unless_the_user_trusts_the_file(suffix, tmp_path, capsys):
    """The Lambda writes a file when called (as loading does, rebuilding the graph): refused, nothing is written;
    with --trust-code it loads, runs and converts."""
    from kerascomp.cli import main

    marker = tmp_path / "ran"
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    touched = keras.layers.Lambda(eval(f"lambda t: (open({str(marker)!r}, 'a').close(), t)[1]"), name="touch")(flat)
    path = tmp_path / f"model{suffix}"
    keras.Model(inputs, keras.layers.Dense(10)(touched)).save(path)
    marker.unlink()  # building the model called it once

    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path} has Lambda layer(s) touch: loading it runs Python code") and err.count("\n") == 1
    assert "--trust-code" in err and not marker.exists()

    assert main(["--trust-code", "convert", str(path), "--out", str(tmp_path / "m.tflite")]) == 0
    assert marker.exists() and (tmp_path / "m.tflite").stat().st_size > 0
