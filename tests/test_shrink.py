"""Structured shrinking: dependency groups found from the graph, a cut that computes what masking computes, the plan,
the refusals, and the command."""

import json

import numpy as np
import pytest

from kerascomp.backend import keras
from kerascomp.cli import main
from kerascomp.compress.shrink import ShrinkConfig, analyse, cost, format_plan, mask, plan, rebuild
from kerascomp.compress.shrink.allocate import allocate, magnitude, taylor
from kerascomp.errors import ConfigError, ModelError
from kerascomp.saving import load_model

L = keras.layers


def _random(model, seed=0):
    """Random weights (BN variances positive), so that every channel matters and a wrong cut shows."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            layer.moving_variance.assign(np.abs(layer.moving_variance.numpy()) + 0.5)
    return model


def _cut(model, keep=0.5, round_to=2, target="params"):
    graph = analyse(model)
    groups = graph.groups()
    kept = allocate(graph, groups, magnitude(graph, groups), target, keep, round_to)
    return graph, kept, rebuild(graph, kept)


def _assert_cut_equals_mask(model, shape, **kwargs):
    """The shrunk model computes exactly what the original computes with the removed channels masked out where
    their consumers read them."""
    graph, kept, small = _cut(model, **kwargs)
    assert kept, "nothing was cut"
    x = np.random.default_rng(1).normal(size=(4, *shape)).astype("float32")
    np.testing.assert_allclose(small.predict(x, verbose=0), mask(graph, kept).predict(x, verbose=0),
                               atol=1e-5, rtol=1e-5)
    assert small.count_params() == cost(analyse(small))["params"] < model.count_params()
    return graph, kept, small


def _groups_by_producer(graph):
    return {tuple(g.producers): g for g in graph.groups()}


def residual_cnn():
    x = inp = keras.Input((12, 12, 3))
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(L.Conv2D(16, 3, padding="same", name="stem")(x)))
    y = L.BatchNormalization(name="branch_bn")(L.Conv2D(16, 3, padding="same", name="branch")(x))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(12, 3, strides=2, padding="same", activation="relu", name="down")(x)
    x = L.GlobalAveragePooling2D()(x)
    return _random(keras.Model(inp, L.Dense(5, name="logits")(x)))


def test_a_residual_add_ties_its_branches_into_one_group_with_their_batch_norms():
    graph = analyse(residual_cnn())
    stream = _groups_by_producer(graph)[("stem", "branch")]
    assert stream.shrinkable and stream.size == 16
    assert {"stem_bn", "branch_bn", "down"} <= set(stream.members)
    assert _groups_by_producer(graph)[("logits",)].frozen == "a model output"
    _assert_cut_equals_mask(residual_cnn(), (12, 12, 3))


def test_depthwise_convolutions_keep_their_inputs_channels_and_concat_offsets_follow():
    x = inp = keras.Input((10, 10, 4))
    x = L.Conv2D(16, 1, name="expand")(x)
    d = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    e = L.Conv2D(8, 1, name="side")(x)
    x = L.Concatenate()([L.BatchNormalization()(d), e])
    x = L.Conv2D(10, 3, padding="same", activation="relu", name="mix")(x)
    model = _random(keras.Model(inp, L.Dense(3)(L.Flatten()(x))))
    graph = analyse(model)
    expand = _groups_by_producer(graph)[("expand",)]
    assert {"dw", "side", "mix"} <= set(expand.members)  # dw's channels are expand's; mix reads them behind a concat
    _, kept, small = _assert_cut_equals_mask(model, (10, 10, 4))
    assert small.get_layer("dw").depthwise_kernel.shape[2] == small.get_layer("expand").filters


def test_attention_heads_and_mlp_units_are_groups_of_their_own():
    inp = keras.Input((6, 16))
    h = L.Dense(24, name="embed")(inp)
    h = L.Add()([h, L.MultiHeadAttention(num_heads=6, key_dim=4, name="attn")(h, h)])
    h = L.Add()([h, L.Dense(24, name="mlp2")(L.Dense(48, activation="gelu", name="mlp1")(h))])
    model = _random(keras.Model(inp, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h))))
    attn = model.get_layer("attn")
    scale = np.where(np.arange(6) < 2, 0.01, 1.0)  # heads 0 and 1 barely matter: they are the ones to go
    head_axis = {"query/kernel": 1, "key/kernel": 1, "value/kernel": 1, "attention_output/kernel": 0}
    weak = []
    for weight, value in zip(attn.weights, attn.get_weights()):
        axis = head_axis.get(weight.name.split("/", 1)[1].split(":")[0])
        weak.append(value if axis is None else value * np.expand_dims(scale, [a for a in range(value.ndim) if a != axis]))
    attn.set_weights(weak)
    graph = analyse(model)
    heads = graph.groups()[[g.root for g in graph.groups()].index(graph.root(graph.heads["attn"].id))]
    assert heads.size == 6 and heads.producers == ["attn"]
    assert _groups_by_producer(graph)[("mlp1",)].size == 48
    assert set(_groups_by_producer(graph)[("embed", "attn", "mlp2")].members) >= {"attn", "mlp1", "head"}
    _, kept, small = _assert_cut_equals_mask(model, (6, 16))
    assert small.get_layer("attn").get_config()["num_heads"] < 6
    assert not {0, 1} & set(kept[graph.root(graph.heads["attn"].id)])


def test_the_seed_vit_shrinks_heads_and_mlp_units_and_names_what_it_leaves_whole():
    from kerascomp import models

    vit = _random(models.build("vit", (16, 16, 3), 4, depth=2), seed=2)
    graph, kept, small = _assert_cut_equals_mask(vit, (16, 16, 3), keep=0.7, round_to=4)
    assert {"class_token", "position_embedding"} <= set(graph.unfollowed)
    assert small.count_params() <= 0.7 * vit.count_params()


def test_a_layer_whose_channels_cannot_be_followed_is_left_whole_and_named():
    x = inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, name="a")(x)
    x = L.Reshape((6, 6, 2, 4))(x)  # mixes the channel axis into a new one
    x = L.Reshape((6, 6, 8))(x)
    x = L.Conv2D(8, 3, name="b")(x)
    model = _random(keras.Model(inp, L.Dense(2)(L.Flatten()(x))))
    graph = analyse(model)
    assert _groups_by_producer(graph)[("a",)].frozen.startswith("read by reshape")
    assert "reshape" in graph.unfollowed and _groups_by_producer(graph)[("b",)].shrinkable
    text = format_plan(plan(model, ShrinkConfig(keep=0.9, round_to=2)))
    assert "left whole: reshape: Reshape: its channel mapping is not known" in text


def test_a_target_out_of_reach_is_refused_saying_how_far_it_can_go():
    model = residual_cnn()
    with pytest.raises(ModelError, match=r"cannot shrink params to 1%: .* still \d+% of the original"):
        _cut(model, keep=0.01, round_to=8)
    with pytest.raises(ConfigError, match="keep must be in"):
        ShrinkConfig(keep=1.5)
    with pytest.raises(ConfigError, match="keep is required"):
        ShrinkConfig()


def test_taylor_importance_removes_the_channels_the_loss_does_not_feel(digits):
    """Channels 0-3 have the largest filters but nothing reads them: magnitude keeps them, Taylor removes them."""
    x = inp = keras.Input(digits.input_shape)
    x = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, activation="relu", name="conv")(x))
    model = _random(keras.Model(inp, L.Dense(10, name="logits")(x)))
    kernel, bias = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel * np.where(np.arange(8) < 4, 10.0, 1.0), np.abs(bias)])
    weights, out_bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([weights * (np.arange(8) >= 4)[:, None], out_bias])
    graph = analyse(model)
    groups = graph.groups()
    root = _groups_by_producer(graph)[("conv",)].root
    by_taylor = allocate(graph, groups, taylor(graph, groups, digits.x_train[:256], digits.y_train[:256]),
                         "params", 0.6, 4)
    by_magnitude = allocate(graph, groups, magnitude(graph, groups), "params", 0.6, 4)
    assert list(by_taylor[root]) == [4, 5, 6, 7] and list(by_magnitude[root]) == [0, 1, 2, 3]


def test_macs_targets_count_multiply_accumulates():
    model = residual_cnn()
    graph, kept, small = _cut(model, keep=0.4, target="macs")
    assert cost(analyse(small))["macs"] <= 0.4 * cost(graph)["macs"]
    assert cost(graph)["macs"] == 12 * 12 * (27 * 16 + 144 * 16) + 6 * 6 * 144 * 12 + 12 * 5


def test_attention_macs_count_the_scores_and_weighted_values_of_every_kept_head():
    """Projections cost kernel x tokens; the scores QK^T and the weighted values AV cost T x S x heads x
    (key_dim + value_dim), and fall with the heads cut."""
    queries, keys = keras.Input((5, 16)), keras.Input((7, 16))
    attended = L.MultiHeadAttention(4, 8, name="mha")(queries, keys)
    model = _random(keras.Model([queries, keys], L.Dense(3, name="out")(L.Flatten()(attended))))
    projections = 5 * 16 * 4 * 8 + 2 * 7 * 16 * 4 * 8 + 5 * 4 * 8 * 16
    assert cost(analyse(model))["macs"] == projections + 5 * 7 * 4 * (8 + 8) + 5 * 16 * 3
    graph, kept, small = _cut(model, keep=0.5, round_to=1)
    heads = small.get_layer("mha")._num_heads
    assert heads < 4 and cost(analyse(small))["macs"] == (projections * heads // 4 + 5 * 7 * heads * (8 + 8)
                                                          + 5 * 16 * 3)


def test_the_latency_search_keeps_the_largest_cut_within_the_goal():
    """The bisection over MAC shares, with a latency that is a known function of the cut: the kept cut is within
    the goal, and every larger cut tried was not."""
    from kerascomp.compress.shrink.latency import fit_latency

    model = residual_cnn()
    graph = analyse(model)
    groups = graph.groups()

    def latency(candidate):  # a fixed overhead plus time per MAC, as a small model behaves
        return 0.01 + 1e-6 * cost(analyse(candidate))["macs"]

    kept, measured = fit_latency(graph, groups, magnitude(graph, groups), 0.6, 2, measure=latency)
    assert measured["after"] == latency(rebuild(graph, kept)) <= measured["goal"] == pytest.approx(0.6 * latency(model))
    passed = [t for t in measured["tries"] if t["p50_ms"] <= measured["goal"]]
    failed = [t for t in measured["tries"] if t["p50_ms"] > measured["goal"]]
    assert measured["after"] == max(t["p50_ms"] for t in passed) and failed
    assert max(t["macs_share"] for t in passed) < min(t["macs_share"] for t in failed)


@pytest.mark.slow
def test_a_latency_target_times_cuts_in_litert_and_records_them():
    """--target latency, measured: the plan records the input's p50 and the kept cut's, within the goal."""
    from kerascomp import models
    from kerascomp.bench import latency_ms

    planned = plan(models.build("cnn", (32, 32, 3), 10, width=32, depth=3), ShrinkConfig(keep=0.5, target="latency"),
                   measure=latency_ms)
    assert planned.after["latency_ms"] <= planned.latency["goal"] == pytest.approx(0.5 * planned.before["latency_ms"])
    assert planned.after["macs"] < planned.before["macs"]
    assert "p50" in format_plan(planned)


def test_one_compression_times_each_architecture_once_so_the_plan_printed_is_the_plan_applied(
        monkeypatch, digits, digits_model, tmp_path):
    """compress_file prints the pre-flight plan, then cuts: both read one set of timings (and the input is timed
    once), so a noisy clock cannot make the printed plan differ from the applied one."""
    from kerascomp.pipeline import runner

    timed = []

    def latency(candidate):  # a clock that never repeats itself: a second timing of a model would show
        timed.append(cost(analyse(candidate))["macs"])
        return 0.01 + 1e-6 * timed[-1] + 1e-4 * len(timed)

    monkeypatch.setitem(runner.MEASUREMENTS, "latency", latency)
    lines = []
    metrics = runner.compress_file("shrink", digits_model[0], digits, ShrinkConfig(keep=0.7, target="latency",
                                   epochs=1, verbose=0), tmp_path / "s.keras", echo=lines.append)
    assert len(timed) == len(set(timed)) and len(timed) > 2
    after = metrics["after"]["latency_ms"]
    assert f"p50 {metrics['before']['latency_ms']:.4f} -> {after:.4f} ms" in lines[0]


def test_a_latency_target_no_cut_reaches_is_refused_with_the_fastest_measured(capsys, digits_model):
    """From the CLI (which passes the LiteRT measurement in): one Error line; in Python without a measurement: why."""
    assert main(["shrink", str(digits_model[0]), "--keep", "0.01", "--target", "latency", "--plan"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: no cut reaches 1% of the input's") and "fastest measured" in err
    with pytest.raises(ConfigError, match="measure=kerascomp.bench.latency_ms"):
        plan(load_model(digits_model[0]), ShrinkConfig(keep=0.5, target="latency"))


def test_the_plan_lists_channels_kept_per_group_before_anything_trains(capsys, digits_model):
    assert main(["shrink", str(digits_model[0]), "--keep", "0.5", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "pre-flight:" in out and "keep" in out and "whole" in out  # the logits group stays whole


def test_shrink_writes_a_plain_smaller_model_with_its_metrics(capsys, tmp_path, digits, digits_model):
    out = tmp_path / "small.keras"
    assert main(["shrink", str(digits_model[0]), "--data", "digits", "--keep", "0.5", "--epochs", "1",
                 "--out", str(out), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    small = load_model(out)
    assert small.count_params() == metrics["after"]["params"] <= 0.5 * metrics["before"]["params"]
    assert not any("Prune" in type(layer).__name__ for layer in small.layers)
    assert "params" in capsys.readouterr().out


def test_mobilenet_v2_depthwise_and_inverted_residuals_cut_exactly():
    """tf_keras.applications' MobileNetV2 (depthwise, ReLU6, zero padding, residual adds): every group but the
    input's and the logits' shrinks, and the cut equals the mask."""
    from kerascomp import models

    model = models.build("mobilenet_v2", (32, 32, 3), 4, alpha=0.35)
    graph, kept, small = _assert_cut_equals_mask(model, (32, 32, 3), keep=0.6, round_to=8, target="macs")
    assert graph.unfollowed and all(why.startswith("Rescaling") for why in graph.unfollowed.values())
    assert sum(g.shrinkable for g in graph.groups()) >= 20
    assert cost(analyse(small))["macs"] <= 0.6 * cost(graph)["macs"]
