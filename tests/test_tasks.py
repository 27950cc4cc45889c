"""Tasks other than classification: inferred or stated, trained and judged in their own metric and direction."""

import dataclasses
import json
import types

import numpy as np
import pytest

from kerascomp.budget import check
from kerascomp.cli import main
from kerascomp.compress import registry
from kerascomp.compress.search import search
from kerascomp.data import Dataset, load_data
from kerascomp.errors import DataError
from kerascomp.tasks import CLASSIFICATION, REGRESSION, SEGMENTATION, infer_task


@pytest.mark.parametrize("y, task", [
    (np.arange(30) % 3, "classification"),
    (np.arange(30, dtype="float32") % 3, "classification"),  # whole-number floats: labels, as loaders always read
    (np.eye(3, dtype="float32")[np.arange(30) % 3], "classification"),  # one-hot rows
    (np.linspace(0, 1, 30, dtype="float32"), "regression"),
    (np.stack([np.linspace(0, 1, 30), np.linspace(1, 0, 30)], 1).astype("float32"), "regression"),
    (np.arange(30 * 16).reshape(30, 4, 4) % 3, "segmentation"),  # a class per pixel
    (np.zeros((30, 4, 4, 1), "float32"), "segmentation"),  # masks with a channel axis
    (np.eye(3, dtype="float32")[np.arange(30 * 16).reshape(30, 4, 4) % 3], "segmentation"),  # one-hot per pixel
    (np.full((30, 4, 4), 0.5, "float32"), "regression"),  # a value per pixel: refused by the loaders, below
])
def test_the_task_is_inferred_from_the_targets(y, task):
    assert infer_task(y) == task


def _ink(n=120, seed=0):
    """8x8 images of random brightness and their mean ink: a regression target the input determines."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 8, 8)) * rng.uniform(0.2, 1.0, (n, 1, 1))).astype(np.float32)
    return x, x.mean(axis=(1, 2))


def test_float_targets_make_a_regression_dataset_and_a_task_can_be_stated():
    x, y = _ink()
    data = Dataset.from_arrays(x, y, val_fraction=0.2)
    assert data.task == REGRESSION and data.num_outputs == 1 and data.class_names == ()
    assert data.y_train.dtype == np.float32 and data.describe()["task"] == "regression"
    two = Dataset.from_arrays(x, np.stack([y, 2 * y], 1))
    assert two.num_outputs == 2 and two.y_val.shape[1] == 2
    whole = Dataset.from_arrays(x, np.round(10 * y), task="regression")  # whole numbers, stated as targets
    assert whole.task == REGRESSION and "task" not in load_data("digits").describe()


@pytest.mark.parametrize("make, message", [
    (lambda x, y: Dataset.from_arrays(x, np.where(y > 0.5, np.nan, y)), "NaN or Inf targets"),
    (lambda x, y: Dataset.from_arrays(x, np.full_like(y, 0.25)), "nothing to learn"),
    (lambda x, y: Dataset.from_arrays(x, y, task="ranking"), "unknown task 'ranking'"),
    (lambda x, y: load_data("digits", task="regression"), "holds class labels"),
])
def test_targets_that_cannot_be_learned_are_refused_in_one_line(make, message):
    with pytest.raises(Exception, match=message) as error:
        make(*_ink())
    assert isinstance(error.value, (DataError, ValueError)) and "\n" not in str(error.value)


def test_a_budget_reads_the_metric_in_its_direction_and_units():
    regression = check({"val_mae": 0.12}, baseline=0.10, max_drop=0.05, task=REGRESSION)
    assert regression["drop"] == pytest.approx(0.02) and regression["met"] and regression["unit"] == ""
    assert "drop_pp" not in regression  # a classifier's names only for a classifier
    assert not check({"val_mae": 0.2}, 0.10, 0.05, REGRESSION)["met"]
    assert check({"val_mae": 0.05}, 0.10, 0.0, REGRESSION)["drop"] < 0  # a lower error is no drop
    classifier = check({"val_accuracy": 0.89}, 0.9, 1.0, CLASSIFICATION)
    assert classifier["drop_pp"] == classifier["drop"] == pytest.approx(1.0) and classifier["met"]
    segmenter = check({"val_mean_iou": 0.905}, 0.9, 1.0, SEGMENTATION)  # a higher IoU: no drop, in pp
    assert segmenter["drop"] == pytest.approx(-0.5) and segmenter["met"] and segmenter["unit"] == "pp"
    assert not check({"val_mean_iou": 0.88}, 0.9, 1.0, SEGMENTATION)["met"]


@dataclasses.dataclass
class _Level:
    level: int | None = None


def test_the_search_climbs_while_the_error_stays_within_the_budget():
    from kerascomp.backend import keras

    def apply(model, data, config, *, teacher=None):  # the error grows with the strength
        return model, {"val_mae": 0.1 + 0.01 * config.level, "baseline": {"val_mae": 0.1}}

    technique = registry.Technique(name="fake", config=_Level, apply=apply, help="", summary=str,
                                   strength=registry.Strength("level", (1, 2, 4, 8)))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    _, _, record = search(technique, model, types.SimpleNamespace(task=REGRESSION), _Level(), max_drop=0.05,
                          baseline=0.1)
    assert [(t["strength"], t["passed"]) for t in record["tries"]] == [(1, True), (2, True), (4, True), (8, False),
                                                                        (6, False)]
    assert record["chosen"] == 4 and record["metric"] == "mae" and all("drop_pp" not in t for t in record["tries"])


@pytest.mark.slow  # 21 s; the regression pipeline below takes prune, convert and bench in MAE in the quick suite
def test_a_regressor_goes_through_prune_convert_and_bench_in_its_own_metric(tmp_path, capsys):
    """It was refused at the door: 'y must hold integer class labels, got float32'."""
    x, y = _ink(400)
    np.savez(tmp_path / "ink.npz", x=x, y=y)
    data = ["--data", str(tmp_path / "ink.npz")]
    assert main(["train", "--model", "cnn", "--model-arg", "width=4", *data, "--epochs", "8",
                 "--out", str(tmp_path / "t.keras")]) == 0
    assert "1 regression targets" in capsys.readouterr().out
    assert main(["prune", str(tmp_path / "t.keras"), *data, "--max-drop", "0.1", "--epochs", "1",
                 "--out", str(tmp_path / "p.keras"), "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "val mae" in out and "pp" not in out.split("val mae")[1].splitlines()[0]
    pruned = json.loads((tmp_path / "p.json").read_text())
    assert pruned["budget"]["metric"] == "mae" and pruned["budget"]["met"] and pruned["search"]["chosen"]
    assert main(["convert", str(tmp_path / "p.keras"), "--quantize", "int8", *data,
                 "--out", str(tmp_path / "p.tflite")]) == 0
    assert "of the outputs' spread" in capsys.readouterr().out  # top-1 agreement says nothing of one output
    sidecar = json.loads((tmp_path / "p.tflite.json").read_text())
    assert sidecar["verification"]["judged_by"] == "spread" and sidecar["task"] == "regression"
    np.savez(tmp_path / "two.npz", x=x[:2])
    assert main(["predict", str(tmp_path / "p.tflite"), str(tmp_path / "two.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()  # the predicted values, not classes and probabilities
    assert len(lines) == 2 and all(abs(float(line.split(": ")[1]) - t) < 0.5 for line, t in zip(lines, y[:2]))
    assert main(["bench", str(tmp_path / "p.keras"), str(tmp_path / "p.tflite"), *data, "--runs", "3",
                 "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert all(r["metric"]["name"] == "mae" and not r["metric"]["higher_is_better"] and r["accuracy"] is None
               for r in rows)
    keras_mae, file_mae = (r["metric"]["value"] for r in rows)
    assert keras_mae == pytest.approx(pruned["test_mae"], rel=1e-4)  # bench scores the Keras file as training did
    assert abs(file_mae - keras_mae) < 0.1 * np.std(y)  # the int8 file within the verified error


def test_steps_that_still_judge_by_accuracy_refuse_a_regressor_in_one_line():
    from kerascomp import models
    from kerascomp.analysis import sweep
    from kerascomp.compress import swap
    from kerascomp.errors import ConfigError

    x, y = _ink()
    data = Dataset.from_arrays(x, y)
    model = models.build("cnn", data.input_shape, 1, width=4)
    for call, what in ((lambda: swap.apply(model, data), "swap"),
                       (lambda: sweep.sweep(model, data, {"temperature": [2.0]}, "state.json"), "sweep")):
        with pytest.raises(ConfigError, match=f"^{what} works on classifiers only so far; this data is regression"):
            call()


def test_a_regressor_is_distilled_in_its_metric_and_the_gap_runs_the_way_of_an_error():
    from kerascomp import models
    from kerascomp.compress import distill
    from kerascomp.compress.distill import gap_closed
    from kerascomp.training import TrainConfig

    x, y = _ink(200)
    data = Dataset.from_arrays(x, y)
    teacher = models.build("cnn", data.input_shape, 1, width=4)
    student, metrics = distill.apply("mlp", data, teacher=teacher, student_args={"hidden": (8,)},
                                     train_config=TrainConfig(epochs=1, verbose=0), compare_scratch=True)
    assert metrics["metric"] == "mae" and {"teacher_mae", "student_mae", "scratch_mae"} <= set(metrics)
    assert metrics["student"]["history"]["mae"] and "accuracy" not in metrics["student"]["history"]
    assert "test mae" in distill.summary(metrics)
    assert gap_closed(0.1, 0.15, 0.2, higher_is_better=False) == pytest.approx(0.5)  # half the error regained
    assert gap_closed(0.2, 0.15, 0.1, higher_is_better=False) is None  # scratch already errs less


def test_the_regression_pipeline_chooses_and_reports_in_mae(small_pipeline):
    """configs/regression.yaml in small: the budget, the final choice, the summary and the report read the MAE."""
    report, printed, out = small_pipeline("{spec: digits-centroid, val_fraction: 0.25}", 1.0,
                                          "{model: cnn, args: {width: 4}, train: {epochs: 3}}",
                                          "{epochs: 1, distill_from: teacher}")
    choice, summary = report["choice"], report["summary"]
    assert report["dataset"]["task"] == "regression" and choice["metric"] == "mae" and choice["chosen"]
    rows = {r["name"]: r for r in report["results"]}
    base = rows["teacher_fp32"]["val_mae"]
    assert all(c["within"] == (c["val"] - base <= 1.0 + 1e-9) for c in choice["candidates"])
    assert summary["metric"] == "mae" and summary["accuracy_drop_pp"] is None
    assert summary["metric_drop"] == pytest.approx(rows[summary["final"]]["metric"]["value"]
                                                   - rows["teacher_fp32"]["metric"]["value"])
    assert "test mae drop" in printed and report["final"]["predicted"]
    markdown = (out / "report.md").read_text()
    assert "| artifact | val mae | val drop |" in markdown and "predictions.png" in markdown
    assert (out / "plots" / "predictions.png").is_file() and (out / "plots" / "search_prune.png").is_file()


def test_the_command_line_states_a_task_the_targets_do_not_show(tmp_path, capsys):
    """Whole-number targets (counts, ages) read as classes unless --task says otherwise."""
    x, y = _ink()
    np.savez(tmp_path / "counts.npz", x=x, y=np.round(100 * y).astype("float32"))
    common = ["--data", str(tmp_path / "counts.npz"), "--epochs", "1", "--out", str(tmp_path / "m.keras")]
    assert main(["train", "--model", "mlp", *common]) == 0
    assert " classes" in capsys.readouterr().out
    assert main(["train", "--model", "mlp", *common, "--task", "regression"]) == 0
    printed = capsys.readouterr().out
    assert "1 regression targets" in printed and "test mae" in printed
    assert main(["train", "--model", "mlp", "--data", "digits", "--task", "regression", "--epochs", "1",
                 "--out", str(tmp_path / "d.keras")]) == 1
    assert "holds class labels" in capsys.readouterr().err
