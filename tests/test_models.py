"""Tests for the model zoo: registry errors, exact sizes, flat graphs and safe-mode saving."""

import numpy as np
import pytest

from kerascomp import models
from kerascomp.backend import keras
from kerascomp.errors import ModelError

DIGITS = (8, 8, 1)
SMALL_KWARGS = {
    "mlp": {"hidden": (16,)},
    "cnn": {"width": 4},
    "vit": {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32},
    "mobilenet_v2": {"alpha": 0.35, "input_size": 32},
    "efficientnet_b0": {"input_size": 32},
    "unet": {"width": 4, "depth": 1},
}
PER_PIXEL = {"unet"}  # a class per pixel: logits (H, W, classes)
CIFAR_VIT = {"patch_size": 4, "dim": 256, "heads": 4, "mlp_dim": 512}


@pytest.mark.parametrize("depth, params", [(4, 2140426), (1, 559114)])
def test_vit_parameter_count_matches_reference(depth, params):
    model = models.build("vit", (32, 32, 3), 10, depth=depth, **CIFAR_VIT)
    assert model.count_params() == params


def test_simplified_vit_has_fewer_parameters_than_standard():
    standard = models.build("vit", (32, 32, 3), 10, depth=1, **CIFAR_VIT)
    simplified = models.build("vit", (32, 32, 3), 10, depth=1, block="simplified", **CIFAR_VIT)
    assert simplified.count_params() < standard.count_params()
    assert not any(
        isinstance(layer, keras.layers.LayerNormalization) for layer in simplified.layers
    )


def test_every_registered_model_is_covered_by_these_tests():
    assert set(models.available()) == set(SMALL_KWARGS)


@pytest.mark.parametrize("name", sorted(SMALL_KWARGS))
def test_every_model_builds_flat_and_outputs_float32_logits_per_class(name):
    model = models.build(name, DIGITS, 10, **SMALL_KWARGS[name])
    logits = model(np.random.rand(2, *DIGITS).astype("float32"))
    assert model.name == name
    assert tuple(logits.shape) == ((2, *DIGITS[:2], 10) if name in PER_PIXEL else (2, 10))
    assert model.layers[-1].name == "logits" and logits.dtype == "float32"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)


def test_a_unet_needs_sides_that_halve_depth_times():
    with pytest.raises(ModelError, match="sides must divide by 8; got 8x12"):
        models.build("unet", (8, 12, 1), 3, depth=3)


def test_unknown_model_name_raises_model_error_listing_known_models():
    with pytest.raises(ModelError, match="unknown model 'resnet'.*cnn.*mlp.*vit"):
        models.build("resnet", DIGITS, 10)


def test_unknown_argument_raises_model_error_naming_it_and_known_arguments():
    with pytest.raises(ModelError, match="widht.*'cnn'.*known arguments: width, depth, dropout"):
        models.build("cnn", DIGITS, 10, widht=8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": 3}, "not divisible by patch_size 3"),
        ({"dim": 64, "heads": 3}, "dim 64 is not divisible by heads 3"),
        ({"block": "parallel"}, "unknown block 'parallel'; known blocks: standard, simplified"),
    ],
)
def test_invalid_vit_arguments_raise_model_error(kwargs, message):
    with pytest.raises(ModelError, match=message):
        models.build("vit", DIGITS, 10, **kwargs)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_application_on_small_input_without_input_size_raises_model_error_suggesting_it(name):
    with pytest.raises(ModelError, match="below the minimum 32; pass input_size"):
        models.build(name, DIGITS, 10)


@pytest.mark.parametrize(
    "shape, weights, message",
    [
        ((32, 32, 3), "places365", "weights must be None or 'imagenet'"),
        ((32, 32, 1), "imagenet", "imagenet weights need 3 input channels"),
    ],
)
def test_bad_application_weights_raise_model_error(shape, weights, message):
    with pytest.raises(ModelError, match=message):
        models.build("mobilenet_v2", shape, 10, weights=weights)


def test_imagenet_download_failure_raises_model_error_saying_offline(monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: None -- no network"
        )

    monkeypatch.setattr(keras.src.utils.data_utils, "get_file", offline)
    with pytest.raises(ModelError, match=r"could not download imagenet weights.*\(offline\?\)"):
        models.build("mobilenet_v2", (32, 32, 3), 10, alpha=0.35, weights="imagenet")
    assert len(calls) == 1, "the download went past the patched get_file: this test would fetch weights"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"block": "standard"},
        {"block": "simplified"},
        {"block": "standard", "gelu_approximate": True},
        {"block": "simplified", "gelu_approximate": True, "dropout": 0.1},
    ],
)
def test_vit_round_trips_through_safe_mode_keras_file_with_identical_outputs(tmp_path, kwargs):
    model = models.build("vit", DIGITS, 10, dim=16, depth=2, heads=2, mlp_dim=32, **kwargs)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    images = np.random.rand(3, *DIGITS).astype("float32")
    np.testing.assert_array_equal(loaded(images).numpy(), model(images).numpy())
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("name", ["mlp", "cnn", "vit"])
def test_block_layers_are_named_with_block_index_prefix(name):
    names = [layer.name for layer in models.build(name, DIGITS, 10, **SMALL_KWARGS[name]).layers]
    assert any(n.startswith("block_0_") for n in names)
    if name == "vit":
        assert "block_0_attn" in names and "block_0_gelu" in names


def test_mlp_without_dropout_has_no_dropout_layers():
    model = models.build("mlp", DIGITS, 10, hidden=(8, 8), dropout=0.0)
    assert [layer.name for layer in model.layers] == [
        "input",
        "flatten",
        "block_0_dense",
        "block_1_dense",
        "logits",
    ]


def test_deep_cnn_on_8x8_pools_only_while_feature_map_is_at_least_2_wide():
    model = models.build("cnn", DIGITS, 10, width=4, depth=5)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [layer.name for layer in pools] == ["block_0_pool", "block_1_pool", "block_2_pool"]


def test_mobilenet_v2_with_input_size_builds_on_8x8_grayscale_and_resizes_first():
    model = models.build("mobilenet_v2", DIGITS, 10, alpha=0.35, input_size=32)
    assert isinstance(model.layers[1], keras.layers.Resizing)
    assert isinstance(model.layers[2], keras.layers.Rescaling)


def test_available_lists_each_models_arguments_with_defaults():
    zoo = models.available()
    assert zoo["mlp"] == {"hidden": (1200, 1200), "dropout": 0.2}
    assert zoo["cnn"] == {"width": 32, "depth": 2, "dropout": 0.2}
    assert zoo["vit"]["block"] == "standard" and zoo["vit"]["gelu_approximate"] is False
    assert zoo["mobilenet_v2"] == {"alpha": 1.0, "weights": None, "input_size": None}
    assert zoo["efficientnet_b0"] == {"weights": None, "input_size": None}


def test_get_returns_registered_builder_and_reregistering_a_name_fails():
    assert models.get("cnn") is models.cnn.cnn
    with pytest.raises(ValueError, match="already registered"):
        models.register("cnn")(models.cnn.cnn)
