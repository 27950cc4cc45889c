import json

import numpy as np
import pytest

from kerascomp import models
from kerascomp.backend import keras
from kerascomp.cli import main
from kerascomp.compress.swap import SwapConfig, apply, find_blocks, format_plan, model_flops, plan
from kerascomp.compress.swap import candidates as catalogue
from kerascomp.errors import ConfigError, ModelError
from kerascomp.export import export
from kerascomp.models.layers import SimplifiedAttention
from kerascomp.saving import load_model, save_model

QUICK = dict(epochs_per_block=0, fit_epochs=2, bench_runs=0, verbose=0)


def weights_by_layer(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


def same_weights(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def tiny_vit(depth=2):
    return models.build("vit", (8, 8, 1), 10, patch_size=2, dim=16, depth=depth, heads=2, mlp_dim=32)


def plain_model():
    """No zoo names, no residual connections: nothing to swap without --blocks."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
    x = keras.layers.ReLU(name="stage1_relu")(x)
    x = keras.layers.Conv2D(4, 3, name="stage2_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_plan_lists_zoo_blocks_with_lighter_candidates(digits_model):
    entries = plan(digits_model[1])
    assert [e["name"] for e in entries] == ["block_0", "block_1"]
    for entry in entries:
        assert entry["kind"] == "conv" and entry["params"] > 0
        built = [c for c in entry["candidates"] if "skipped" not in c]
        assert {c["candidate"] for c in built} == {"separable", "fewer_filters", "bottleneck"}
        assert all(c["params"] < entry["params"] for c in built)
        assert [c["params"] for c in built] == sorted(c["params"] for c in built)  # lightest first
    text = format_plan(entries)
    assert "block_1 (conv" in text and "separable" in text
    assert [e["name"] for e in plan(digits_model[1], SwapConfig(order="backward"))] == ["block_1", "block_0"]


def test_vit_blocks_are_transformers_and_flops_add_up():
    model = tiny_vit()
    blocks = find_blocks(model)
    assert [(b.name, b.kind) for b in blocks] == [("block_0", "transformer"), ("block_1", "transformer")]
    assert sum(b.flops for b in blocks) < model_flops(model)
    names = {c["candidate"] for c in plan(model)[0]["candidates"] if "skipped" not in c}
    assert names == {"simplified", "fewer_heads", "narrow_mlp"}


def test_residual_structure_defines_blocks_without_zoo_names():
    def rename(layer):
        return type(layer).from_config({**layer.get_config(), "name": layer.name.replace("block_", "b")})

    vit = keras.models.clone_model(tiny_vit(), clone_function=rename)
    blocks = find_blocks(vit)  # each attention unit merged with the MLP unit that follows it
    assert [b.kind for b in blocks] == ["transformer", "transformer"]
    assert blocks[0].layers[0] == "b0_ln1" and blocks[0].layers[-1] == "b0_mlp_add"

    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    y = keras.layers.Conv2D(4, 3, padding="same", name="body")(x)
    y = keras.layers.Add(name="skip")([x, y])
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(y)))
    model = keras.Model(inputs, outputs)
    (block,) = find_blocks(model)
    assert block.layers == ("body", "skip") and block.kind == "conv"
    (separable,) = [c for c in catalogue.candidates("conv") if c.name == "separable"]
    new = separable.instantiate(block, model, "r_")
    assert any(isinstance(layer, keras.layers.Add) for layer in new.layers)  # the replacement keeps the skip


def test_blocks_regex_groups_layers_by_matched_name():
    blocks = find_blocks(plain_model(), r"stage\d+")
    assert [(b.name, b.layers) for b in blocks] == [("stage1", ("stage1_conv", "stage1_relu")),
                                                      ("stage2", ("stage2_conv",))]


@pytest.mark.parametrize("pattern, message", [(None, "no blocks found"), ("nothing_\\d", "matches no layer")])
def test_models_without_blocks_are_model_errors(pattern, message):
    with pytest.raises(ModelError, match=message):
        find_blocks(plain_model(), pattern)


@pytest.mark.parametrize("kwargs, message", [
    ({"tolerance": -0.5}, "tolerance"), ({"order": "random"}, "unknown order"), ({"blocks": "("}, "regular"),
    ({"candidates": ("nope",)}, "unknown candidate"), ({"epochs_per_block": -1}, "epochs_per_block")])
def test_bad_config_values_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SwapConfig(**kwargs)


def test_full_rank_svd_reproduces_the_kernel_and_truncation_is_optimal():
    kernel = np.random.default_rng(0).normal(size=(24, 10)).astype(np.float32)
    a, b = catalogue.factorize(kernel, 10)
    np.testing.assert_allclose(a @ b, kernel, atol=1e-5)
    a, b = catalogue.factorize(kernel, 4)
    singular = np.linalg.svd(kernel, compute_uv=False)
    assert np.isclose(np.sum((kernel - a @ b) ** 2), np.sum(singular[4:] ** 2), rtol=1e-3)  # Eckart-Young


def test_low_rank_dense_starts_from_the_truncated_svd_of_the_original(digits):
    model = models.build("mlp", digits.input_shape, digits.num_classes, hidden=(48,), dropout=0.0)
    (block,) = find_blocks(model)
    new = catalogue.candidates("dense")[0].instantiate(block, model, "block_0_low_rank_")
    assert new.count_params() < block.params
    kernel, bias = model.get_layer("block_0_dense").get_weights()
    rank = new.get_layer("block_0_low_rank_low_rank_a").units
    a, b = catalogue.factorize(kernel, rank)
    x = keras.Model(model.inputs, block.input).predict(digits.x_val, verbose=0)
    np.testing.assert_allclose(new.predict(x, verbose=0), np.maximum(x @ a @ b + bias, 0), atol=1e-4)


def harmful_block(block, source, x, prefix):
    """A conv block whose output is always zero: the model cannot recover what the block carried."""
    y = keras.layers.MaxPooling2D(2, name=prefix + "pool")(x)
    y = keras.layers.Conv2D(block.output.shape[-1], 1, name=prefix + "conv")(y)
    y = keras.layers.Conv2D(block.output.shape[-1], 1, kernel_initializer="zeros", trainable=False,
                            name=prefix + "zero")(y)
    return keras.Model(x, y)


def test_harmful_candidate_is_reverted_and_frozen_weights_stay_bit_identical(digits, digits_model, monkeypatch):
    monkeypatch.setitem(catalogue._REGISTRY["conv"], "blackout",
                        catalogue.Candidate("conv", "blackout", "zero output", harmful_block))
    model = digits_model[1]
    original = weights_by_layer(model)
    config = SwapConfig(tolerance=0.0, candidates=("blackout",), epochs_per_block=1, fit_epochs=1, bench_runs=0,
                        verbose=0)
    swapped, metrics = apply(model, digits, config)
    assert [b["decision"] for b in metrics["blocks"]] == ["kept original", "kept original"]
    assert all(b["tried"][0]["drop_pp"] > 20 for b in metrics["blocks"])
    assert metrics["params_after"] == metrics["params_before"] and metrics["replaced"] == []
    assert [layer.name for layer in swapped.layers] == [layer.name for layer in model.layers]
    for name, weights in original.items():  # trained around, restored, and the caller's model untouched
        assert same_weights(swapped.get_layer(name).get_weights(), weights), name
        assert same_weights(model.get_layer(name).get_weights(), weights), name
    assert metrics["val_accuracy_after"] == metrics["val_accuracy_before"]
    assert all(layer.trainable for layer in swapped.layers)


def test_harmless_swap_is_kept_and_everything_outside_the_block_is_bit_identical(digits, digits_model):
    model = digits_model[1]
    original = weights_by_layer(model)
    config = SwapConfig(tolerance=100.0, blocks=r"(block_1)_", candidates=("fewer_filters",), epochs_per_block=1,
                        fit_epochs=2, bench_runs=0, verbose=0)
    swapped, metrics = apply(model, digits, config)
    (record,) = metrics["blocks"]
    assert metrics["replaced"] == ["block_1"] and record["candidate"] == "fewer_filters"
    assert record["params_after"] < record["params_before"] and record["tried"][0]["kept"]
    assert metrics["params_after"] < metrics["params_before"] and metrics["flops_after"] < metrics["flops_before"]
    assert {"test_accuracy_before", "test_accuracy_after", "val_accuracy_after", "seconds"} <= metrics.keys()
    outside = [name for name in original if not name.startswith("block_1_")]
    for name in outside:  # frozen while the new block trained end to end
        assert same_weights(swapped.get_layer(name).get_weights(), original[name]), name
    assert not any(layer.name.startswith("block_1_conv") for layer in swapped.layers)


def test_swapped_vit_saves_loads_in_safe_mode_and_converts(digits, tmp_path):
    swapped, metrics = apply(tiny_vit(depth=1), digits, SwapConfig(tolerance=100.0, candidates=("simplified",),
                                                                   **QUICK))
    assert metrics["replaced"] == ["block_0"] and metrics["tflite"] is None
    assert any(isinstance(layer, SimplifiedAttention) for layer in swapped.layers)
    path = save_model(swapped, tmp_path / "swapped.keras")
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict(digits.x_val[:8], verbose=0),
                               swapped.predict(digits.x_val[:8], verbose=0), atol=1e-5)
    report = export(loaded, tmp_path / "swapped.tflite", data=digits)
    assert report["verification"]["top1_agreement"] == 1.0


def run(capsys, *args):
    code = main(list(args))
    return (code, *capsys.readouterr())


def test_cli_plan_prints_blocks_and_trains_nothing(capsys, digits_model, tmp_path):
    code, out, _ = run(capsys, "swap", str(digits_model[0]), "--plan")
    assert code == 0 and "block_0 (conv" in out and "bottleneck" in out
    assert list(tmp_path.iterdir()) == []


def test_cli_swap_writes_model_json_and_plots(capsys, digits_model, tmp_path):
    out, report, plots = tmp_path / "s.keras", tmp_path / "s.json", tmp_path / "plots"
    code, stdout, _ = run(capsys, "swap", str(digits_model[0]), "--tolerance", "100", "--epochs-per-block", "0",
                          "--fit-epochs", "1", "--candidates", "separable", "--finetune-epochs", "1",
                          "--bench-runs", "5", "--out", str(out), "--json", str(report), "--plots", str(plots))
    assert code == 0, stdout
    metrics = json.loads(report.read_text())
    assert [b["decision"] for b in metrics["blocks"]] == ["replaced", "replaced"]
    assert metrics["finetune"]["epochs"] == 1 and isinstance(metrics["finetune"]["kept"], bool)
    assert load_model(out).count_params() == metrics["params_after"] < metrics["params_before"]
    assert (plots / "swap.png").stat().st_size > 0 and (plots / "confusion.png").stat().st_size > 0
    assert "| block_0 | conv | replaced | separable" in stdout
    tflite = metrics["tflite"]
    assert tflite["after"]["size_bytes"] < tflite["before"]["size_bytes"] and tflite["after"]["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("extra, message", [
    (("--tolerance", "-1"), "tolerance"), (("--blocks", "nothing_\\d"), "matches no layer")])
def test_cli_bad_input_is_one_error_line_and_writes_nothing(capsys, digits_model, tmp_path, extra, message):
    out = tmp_path / "s.keras"
    code, _, err = run(capsys, "swap", str(digits_model[0]), "--out", str(out), "--json", str(tmp_path / "s.json"),
                       *extra)
    assert code == 1 and err.startswith("Error:") and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_model_without_blocks_is_an_error(capsys, tmp_path):
    source = save_model(plain_model(), tmp_path / "plain.keras")
    code, _, err = run(capsys, "swap", str(source), "--out", str(tmp_path / "s.keras"))
    assert code == 1 and "no blocks found" in err and not (tmp_path / "s.keras").exists()
