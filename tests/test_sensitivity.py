"""Sensitivity scans: stable ranking, input untouched, one-shot magnitude masks, optimal budgeted choice, CLI."""

import itertools
import json

import numpy as np
import pytest

from kerascomp.cli import main
from kerascomp.compress import sensitivity
from kerascomp.errors import ConfigError


def test_scan_is_stable_and_leaves_the_model_untouched(digits, digits_model):
    _, model = digits_model
    before = [w.copy() for w in model.get_weights()]
    _, first = sensitivity.apply(model, digits, sensitivity.SensitivityConfig(sparsities=(0.5, 0.95)))
    _, second = sensitivity.apply(model, digits, sensitivity.SensitivityConfig(sparsities=(0.95, 0.5), batch_size=64))
    assert first["ranking"] == second["ranking"]
    np.testing.assert_allclose([e["drop_pp"] for e in first["layers"]], [e["drop_pp"] for e in second["layers"]])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert [e["name"] for e in first["layers"]] == ["block_0_conv1", "block_0_conv2", "block_1_conv1",
                                                    "block_1_conv2", "logits"]
    # pruning 95% of any layer costs more accuracy than pruning half of it, summed over layers
    assert sum(e["drop_pp"][1] for e in first["layers"]) > sum(e["drop_pp"][0] for e in first["layers"]) > -5
    mean_drop = {e["name"]: np.mean(e["drop_pp"]) for e in first["layers"]}
    assert [mean_drop[n] for n in first["ranking"]] == sorted(mean_drop.values(), reverse=True)


def test_magnitude_mask_keeps_exactly_the_largest_weights():
    weights = np.array([[0.1, -3.0, 0.5], [2.0, -0.2, 0.05]], np.float32)
    np.testing.assert_array_equal(sensitivity.magnitude_mask(weights, 0.5), [[0, 1, 1], [1, 0, 0]])
    assert sensitivity.magnitude_mask(weights, 0.99).sum() == 1  # never an empty layer


def test_choose_sparsities_finds_the_best_combination_within_the_budget():
    scan = {"n_val": 200, "sparsities": [0.5, 0.8, 0.95], "layers": [
        {"name": "a", "weights": 1000, "drop_pp": [0.0, 0.5, 3.0]},
        {"name": "b", "weights": 300, "drop_pp": [-0.5, 0.0, 1.0]},
        {"name": "c", "weights": 5000, "drop_pp": [1.0, 2.0, 6.0]},
    ]}
    for budget in (0.0, 1.0, 2.5, 4.0, 10.0):
        chosen = sensitivity.choose_sparsities(scan, budget)
        best = 0.0
        for combo in itertools.product([(0, 0.0)] + list(zip(scan["sparsities"], range(3))), repeat=3):
            cost = sum(max(0.0, layer["drop_pp"][c[1]]) if c[0] else 0.0 for layer, c in zip(scan["layers"], combo))
            if cost <= budget + 1e-9:
                best = max(best, sum(c[0] * layer["weights"] for layer, c in zip(scan["layers"], combo)))
        assert sum(chosen[layer["name"]] * layer["weights"] for layer in scan["layers"]) == pytest.approx(best)
    assert sensitivity.choose_sparsities(scan, 0.0) == {"a": 0.5, "b": 0.8, "c": 0.0}


@pytest.mark.parametrize("sparsities", [(), (0.0,), (1.0,), (0.5, 1.2)])
def test_sparsities_must_lie_strictly_between_zero_and_one(sparsities):
    with pytest.raises(ConfigError):
        sensitivity.SensitivityConfig(sparsities=sparsities)


def test_cli_writes_json_and_plot_and_refuses_bad_sparsities(capsys, tmp_path, digits_model):
    source, _ = digits_model
    report, plot = tmp_path / "s.json", tmp_path / "s.png"
    code = main(["sensitivity", str(source), "--sparsities", "0.5,0.9", "--layers", "block_1",
                 "--json", str(report), "--plot", str(plot)])
    stdout = capsys.readouterr().out
    scan = json.loads(report.read_text())
    assert code == 0 and "most sensitive first:" in stdout and plot.stat().st_size > 1000
    assert [e["name"] for e in scan["layers"]] == ["block_1_conv1", "block_1_conv2"]
    for value, expected in (("0.5,1.5", 1), ("lots", 2)):
        code = main(["sensitivity", str(source), "--sparsities", value, "--json", str(tmp_path / "bad.json")])
        assert code == expected and capsys.readouterr().err.startswith("Error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.png"]
