"""The accuracy budget: the strength search, the per-command check, the pipeline's budget and final choice."""

import dataclasses
import json
import types

import numpy as np
import pytest

from kerascomp.backend import keras
from kerascomp.cli import main
from kerascomp.compress import registry
from kerascomp.compress.search import search
from kerascomp.errors import ConfigError, Unreachable
from kerascomp.pipeline.run import choose
from kerascomp.pipeline.config import parse_config
from kerascomp.tasks import CLASSIFICATION
from kerascomp.saving import load_meta


DATA = types.SimpleNamespace(task=CLASSIFICATION)  # what the search reads of the data (the fake technique reads none)


@dataclasses.dataclass
class _Config:
    level: float | None = None
    args: dict = dataclasses.field(default_factory=dict)


def _technique(accuracy_at, warm_start=True, steps=(1, 2, 4, 8)):
    """A technique whose validation accuracy is a known function of its strength; records where each try began."""
    starts = []

    def apply(model, data, config, *, teacher=None):
        starts.append(getattr(model, "level", None))
        result = keras.models.clone_model(model)
        result.level = config.level
        return result, {"val_accuracy": accuracy_at(config.level), "baseline": {"val_accuracy": 0.9}}

    technique = registry.Technique(name="fake", config=_Config, apply=apply, help="", summary=str,
                                   strength=registry.Strength("level", steps, warm_start=warm_start))
    return technique, starts


def _model():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])


def test_search_climbs_warm_then_bisects_once_and_keeps_the_last_pass():
    technique, starts = _technique(lambda level: 0.9 - 0.001 * level)  # 1 pp drop at level 10: 8 passes, 16 would not
    technique = dataclasses.replace(technique, strength=registry.Strength("level", (2, 4, 8, 16), warm_start=True))
    model, metrics, record = search(technique, _model(), DATA, _Config(), max_drop=1.0, baseline=0.9)
    assert [t["strength"] for t in record["tries"]] == [2, 4, 8, 16, 12]
    assert [t["passed"] for t in record["tries"]] == [True, True, True, False, False]
    assert starts == [None, 2, 4, 8, 8]  # each try after the first starts from the last model that passed
    assert record["chosen"] == 8 and model.level == 8
    assert metrics["baseline"] == {"val_accuracy": 0.9}  # the input's, not the previous try's
    assert all(t["weights_gzip_bytes"] > 0 and t["params"] == 6 for t in record["tries"])


def test_search_without_warm_start_starts_every_try_from_the_input_and_bisection_can_win():
    technique, starts = _technique(lambda level: 0.9 if level <= 6 else 0.5, warm_start=False)
    model, _, record = search(technique, _model(), DATA, _Config(), max_drop=0.5, baseline=0.9)
    assert [t["strength"] for t in record["tries"]] == [1, 2, 4, 8, 6]
    assert starts == [None] * 5 and record["chosen"] == 6 and model.level == 6


def test_a_marginal_failure_between_passes_does_not_end_the_climb_but_two_in_a_row_do():
    noisy = {1: 0.9, 2: 0.894, 4: 0.9, 8: 0.5, 6: 0.9}  # 2 fails by 0.6 pp on a 0.5 pp budget: within twice it
    technique, starts = _technique(noisy.get)
    model, _, record = search(technique, _model(), DATA, _Config(), max_drop=0.5, baseline=0.9)
    assert [t["strength"] for t in record["tries"]] == [1, 2, 4, 8, 6]  # 8 is clearly over: stop, bisect 4..8
    assert starts == [None, 1, 1, 4, 4] and record["chosen"] == 6 and model.level == 6
    technique, _ = _technique({1: 0.9, 2: 0.894, 4: 0.894, 8: 0.9}.get)
    _, _, record = search(technique, _model(), DATA, _Config(), max_drop=0.5, baseline=0.9)
    assert [t["strength"] for t in record["tries"]] == [1, 2, 4] and record["chosen"] == 1


def _unreachable_above(limit):
    """Validation accuracy that never drops, from a model that cannot go past ``limit``."""
    def accuracy_at(level):
        if level > limit:
            raise Unreachable(f"cannot reach {level}")
        return 0.9
    return accuracy_at


def test_a_step_the_model_cannot_reach_ends_the_ladder_and_the_bisection_looks_below_it():
    technique, _ = _technique(_unreachable_above(6), warm_start=False)
    model, _, record = search(technique, _model(), DATA, _Config(), max_drop=0.5, baseline=0.9)
    assert [t["strength"] for t in record["tries"]] == [1, 2, 4, 6]  # 8 is not a try: 6 is half-way to it
    assert record["unreachable"] == {"strength": 8, "why": "cannot reach 8"}
    assert record["chosen"] == 6 and model.level == 6
    technique, _ = _technique(_unreachable_above(0))
    with pytest.raises(Unreachable):  # not even the weakest step: the model cannot be searched at all
        search(technique, _model(), DATA, _Config(), max_drop=0.5, baseline=0.9)


def test_search_returns_nothing_when_the_weakest_step_fails():
    technique, _ = _technique(lambda level: 0.1)
    model, metrics, record = search(technique, _model(), DATA, _Config(), max_drop=5.0, baseline=0.9)
    assert model is None and metrics == {} and record["chosen"] is None and len(record["tries"]) == 1


def test_strength_reads_and_sets_nested_fields_and_knows_its_direction():
    strength = registry.Strength("args.width", (16, 8, 4))
    config = _Config(args={"depth": 2})
    assert strength.get(config) is None and strength.stronger == "down" and (strength.low, strength.high) == (4, 16)
    assert strength.set(config, 8).args == {"depth": 2, "width": 8} and config.args == {"depth": 2}
    assert strength.between(16, 8) == 12 and strength.between(8, 7) is None
    assert registry.Strength("s", (0.5, 0.75)).between(0.5, 0.75) == 0.625
    with pytest.raises(ConfigError):
        registry.Strength("s", (0.5, 0.5, 0.7))


def _row(name, val, gzip, p50, test=0.9):
    return {"name": name, "threads": 1, "val_accuracy": val, "accuracy": test, "gzip_bytes": gzip,
            "latency_ms": {"p50": p50, "p90": 1.01 * p50}, "path": f"tflite_models/{name}.tflite"}


def test_choice_is_the_smallest_or_fastest_artifact_within_the_budget_and_never_the_baseline():
    rows = [_row("teacher_fp32", 0.99, 1000, 1.0), _row("a", 0.985, 300, 0.5), _row("b", 0.97, 100, 0.2),
            _row("c", 0.982, 200, 0.9)]
    by_size = choose(rows, "teacher_fp32", 1.0, "size")
    assert by_size["chosen"] == "c" and [c["within"] for c in by_size["candidates"]] == [True, False, True]
    assert by_size["path"] == "tflite_models/c.tflite"  # the file to ship, named
    assert choose(rows, "teacher_fp32", 1.0, "latency")["chosen"] == "a"
    assert choose(rows, "teacher_fp32", 2.0, "size")["chosen"] == "b"
    none = choose(rows, "teacher_fp32", 0.1, "size")
    assert none["chosen"] is None and none["message"].startswith("Nothing meets the budget")
    with pytest.raises(ConfigError, match="baseline"):
        choose(rows, "missing", 1.0, "size")


def test_pipeline_budget_is_handed_to_stages_that_leave_their_strength_unset():
    config = parse_config({"teacher": {"model": "cnn"}, "budget": {"max_drop_pp": 0.5}, "summary": {"objective": "latency"},
                           "stages": [{"prune": {}}, {"cluster": {}}, {"prune": {"name": "fixed", "sparsity": 0.5}},
                                      {"swap": {}}, {"qat": {}}, {"cluster": {"name": "own", "max_drop": 2}}]})
    assert [s.options.get("max_drop") for s in config.stages] == [0.5, 0.5, None, None, None, 2]
    assert (config.max_drop, config.objective) == (0.5, "latency")
    for bad, message in (({"budget": {"max_drop_pp": -1}}, "non-negative"), ({"budget": {"max_pp": 1}}, "unknown key"),
                         ({"summary": {"objective": "speed"}}, "objective")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"teacher": {"model": "cnn"}, **bad})


def test_run_strict_exits_non_zero_when_nothing_meets_the_budget(monkeypatch, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("teacher: {model: cnn}\n")
    document = {"summary": {}, "choice": {"chosen": None, "message": "Nothing meets the budget: ..."}}
    monkeypatch.setattr("kerascomp.cli.commands.run_pipeline", lambda *a, **k: document)
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 0
    assert main(["run", str(config), "--out", str(tmp_path / "r"), "--strict"]) == 1
    assert "Error: Nothing meets the budget" in capsys.readouterr().err


def test_prune_with_max_drop_searches_sparsity_and_records_every_try(digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "p.keras"
    code = main(["prune", str(path), "--data", "digits", "--max-drop", "10", "--epochs", "1", "--out", str(out),
                 "--json", str(tmp_path / "p.json")])
    assert code == 0, capsys.readouterr()
    metrics = json.loads((tmp_path / "p.json").read_text())
    record, budget = metrics["search"], metrics["budget"]
    assert record["field"] == "sparsity" and record["tries"][0]["strength"] == 0.5
    passed = [t["strength"] for t in record["tries"] if t["passed"]]
    assert record["chosen"] == max(passed) and metrics["sparsity"] == pytest.approx(record["chosen"], abs=0.01)
    assert budget["met"] and budget["drop_pp"] <= 10 and budget["drop_pp"] == pytest.approx(
        100 * (budget["baseline_val_accuracy"] - metrics["val_accuracy"]))
    entry = load_meta(out)["compression"][-1]
    assert entry["config"]["sparsity"] == record["chosen"] and entry["budget"]["met"]
    assert entry["baseline"]["val_accuracy"] == budget["baseline_val_accuracy"]  # measured on the untouched input


def test_a_fixed_strength_over_the_budget_is_an_error_and_saves_nothing(digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "p.keras"
    code = main(["prune", str(path), "--data", "digits", "--sparsity", "0.97", "--max-drop", "0", "--epochs", "1",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Error: prune costs" in err and "nothing was saved" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_budget_is_measured_against_the_first_input_of_a_chain(digits_model, tmp_path, capsys):
    """A second step spends what the first left: its baseline is the original model, read from the sidecar."""
    path, _ = digits_model
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    assert main(["prune", str(path), "--data", "digits", "--sparsity", "0.3", "--epochs", "1", "--out", str(first)]) == 0
    assert main(["cluster", str(first), "--data", "digits", "--clusters", "16", "--epochs", "1", "--max-drop", "100",
                 "--out", str(second), "--json", str(tmp_path / "b.json")]) == 0
    original = load_meta(first)["compression"][0]["baseline"]["val_accuracy"]
    assert json.loads((tmp_path / "b.json").read_text())["budget"]["baseline_val_accuracy"] == original
    assert np.isfinite(original)


@dataclasses.dataclass(kw_only=True)
class _HopelessConfig(registry.Budgeted):
    level: float | None = registry.option(None, "How hard to try.")
    seed: int = 0
    verbose: int = 0


def _hopeless(model, data, config, *, teacher=None):
    return keras.models.clone_model(model), {"val_accuracy": 0.0, "test_accuracy": 0.0, "baseline": {}}


@pytest.fixture
def hopeless():
    technique = registry.register(registry.Technique(
        name="hopeless", config=_HopelessConfig, apply=_hopeless, help="Never holds a budget.", summary=str,
        strength=registry.Strength("level", (1.0, 2.0))))
    yield technique
    registry.unregister("hopeless")


def test_a_search_that_finds_nothing_is_an_error_alone_and_passes_the_input_on_in_a_pipeline(hopeless, digits,
                                                                                             digits_model, tmp_path):
    from kerascomp.errors import ModelError
    from kerascomp.pipeline.runner import compress_file
    from kerascomp.saving import load_model

    path, model = digits_model
    with pytest.raises(ModelError, match="no level holds --max-drop 1.0 pp"):
        compress_file("hopeless", path, digits, _HopelessConfig(max_drop=1.0), tmp_path / "a.keras")
    assert not (tmp_path / "a.keras").exists()
    warnings = []
    metrics = compress_file("hopeless", path, digits, _HopelessConfig(max_drop=1.0), tmp_path / "b.keras",
                            strict=False, echo=warnings.append)
    assert metrics["unchanged"] and metrics["search"]["chosen"] is None
    assert metrics["budget"]["drop_pp"] == 0 and metrics["budget"]["met"]  # the input, measured against itself
    assert any(w.startswith("Warning: hopeless: no level holds") for w in warnings)
    kept = load_model(tmp_path / "b.keras")
    assert all(np.array_equal(a, b) for a, b in zip(kept.get_weights(), model.get_weights()))


def test_cluster_with_max_drop_prints_its_plan_and_climbs_to_the_fewest_clusters_the_budget_allows(
        digits_model, tmp_path, capsys):
    path, _ = digits_model
    out = tmp_path / "c.keras"
    code = main(["cluster", str(path), "--data", "digits", "--max-drop", "100", "--epochs", "1", "--out", str(out),
                 "--json", str(tmp_path / "c.json")])
    stdout = capsys.readouterr().out
    assert code == 0 and "pre-flight" in stdout and "cluster: trying clusters=32" in stdout
    record = json.loads((tmp_path / "c.json").read_text())["search"]
    assert [t["strength"] for t in record["tries"]] == [32, 16, 8, 4] and record["chosen"] == 4
    assert [t["warm_start"] for t in record["tries"]] == [False, True, True, True]
    assert load_meta(out)["compression"][-1]["config"]["clusters"] == 4
