"""Models with several outputs: targets by output name, one task per output, the first output's metric budgeted."""

import json

import numpy as np
import pytest

from kerascomp import models
from kerascomp.backend import keras
from kerascomp.cli import main
from kerascomp.data import Dataset, load_data, output_names
from kerascomp.errors import ConfigError, DataError, ModelError
from kerascomp.tasks import CLASSIFICATION, REGRESSION, multi_output, single_output, task_of, task_of_metric

BOTH = multi_output({"digit": CLASSIFICATION, "centre": REGRESSION})


def _arrays(n=120, seed=0):
    """Images, a class (whether the image is bright) and a value (its mean) per image."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 8, 8)) * rng.uniform(0.2, 1.0, (n, 1, 1))).astype(np.float32)
    mean = x.mean(axis=(1, 2))
    return x, {"bright": (mean > np.median(mean)).astype(np.int64), "mean": mean}


def test_the_first_output_is_budgeted_and_every_output_is_scored_in_its_own_metric():
    assert BOTH.metric == "digit_accuracy" and BOTH.keys == ("val_digit_accuracy", "test_digit_accuracy")
    assert BOTH.percent and BOTH.higher_is_better  # the budget reads the first output: percentage points
    outputs = {"digit": np.eye(3)[[0, 1, 2, 2]], "centre": np.array([[1.0], [2.0], [3.0], [5.0]])}
    y = {"digit": np.array([0, 1, 2, 0]), "centre": np.array([1.0, 2.0, 3.0, 4.0])}
    assert BOTH.score(outputs, y) == 0.75
    assert BOTH.scores(outputs, y) == {"digit_accuracy": 0.75, "centre_mae": 0.25}
    loss = BOTH.loss_value(y, outputs)  # Keras sums the outputs' losses
    assert loss == pytest.approx(CLASSIFICATION.loss_value(y["digit"], outputs["digit"])
                                 + REGRESSION.loss_value(y["centre"], outputs["centre"]))
    assert task_of({"task": "multi-output", "heads": {"digit": "classification", "centre": "regression"}}) == BOTH
    assert task_of_metric("centre_mae") == REGRESSION and task_of_metric("digit_accuracy") == CLASSIFICATION
    with pytest.raises(ConfigError, match="at least two targets"):
        multi_output({"digit": CLASSIFICATION})
    with pytest.raises(ConfigError, match=r"^distill works on models with one output so far; .* \(digit, centre\)"):
        single_output(BOTH, "distill")


def test_targets_by_output_name_come_from_arrays_and_npz_files_alike(tmp_path):
    x, y = _arrays()
    data = Dataset.from_arrays(x, y)
    assert data.task.head_tasks == {"bright": CLASSIFICATION, "mean": REGRESSION}
    assert data.num_outputs == {"bright": 2, "mean": 1} and data.output_shape == {"bright": (2,), "mean": (1,)}
    assert data.describe()["heads"] == {"bright": "classification", "mean": "regression"}
    train, val = data.head("bright"), data.head("mean")
    assert len(train.y_train) == len(data.x_train) and val.task == REGRESSION
    row = {tuple(image.ravel()[:4]): target for image, target in zip(x, y["mean"])}  # each image keeps its targets
    assert all(row[tuple(image.ravel()[:4])] == target for image, target in zip(data.x_val[..., 0], data.y_val["mean"]))
    np.savez(tmp_path / "both.npz", x=x, y_bright=y["bright"], y_mean=y["mean"])
    loaded = load_data(str(tmp_path / "both.npz"))
    assert loaded.task == data.task and np.array_equal(loaded.y_test["bright"], data.y_test["bright"])
    np.savez(tmp_path / "split.npz", x_train=x[:100], x_test=x[100:], y_train_bright=y["bright"][:100],
             y_test_bright=y["bright"][100:], y_train_mean=y["mean"][:100], y_test_mean=y["mean"][100:])
    split = load_data(str(tmp_path / "split.npz"))
    assert len(split.x_test) == 20 and np.array_equal(split.y_test["mean"], y["mean"][100:])


@pytest.mark.parametrize("arrays, message", [
    (lambda x, y: {"x_train": x, "x_test": x, "y_train_a": y["bright"], "y_train_b": y["mean"],
                   "y_test_a": y["bright"]}, "has y_train_b but no y_test_b"),
    (lambda x, y: {"x": x, "y_a": y["bright"], "y_b": y["mean"][:-1]}, "120 images but 119 labels"),
    (lambda x, y: {"x": x, "y_a": y["bright"], "y_b": np.zeros(len(x), "float32") + 0.5},
     "every training target of output 'b'"),
])
def test_targets_that_do_not_fit_are_refused_in_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays(*_arrays()))
    with pytest.raises(DataError, match=message) as error:
        load_data(str(tmp_path / "bad.npz"))
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match="task 'regression' names one"):
        Dataset.from_arrays(*_arrays(), task="regression")


def test_outputs_are_matched_by_name_through_compression_wrappers_and_mismatches_named():
    import tensorflow_model_optimization as tfmot

    data = load_data("digits-multi")
    model = models.build("cnn", data.input_shape, data.num_outputs, width=4)
    assert output_names(model) == ["digit", "centre"] and data.check_model(model) is None
    pruned = keras.models.clone_model(model, clone_function=lambda layer: tfmot.sparsity.keras.prune_low_magnitude(
        layer) if layer.name == "digit" else layer)
    assert pruned.output_names[0] == "prune_low_magnitude_digit" and output_names(pruned) == ["digit", "centre"]
    renamed = models.build("cnn", data.input_shape, {"digit": 10, "middle": 2}, width=4)
    with pytest.raises(DataError, match="has targets for 'digit', 'centre' but the model outputs 'digit', 'middle'"):
        data.check_model(renamed)
    with pytest.raises(DataError, match=r"2 regression targets but the model \(output 'centre'\) outputs 3"):
        data.check_model(models.build("cnn", data.input_shape, {"digit": 10, "centre": 3}, width=4))
    with pytest.raises(ModelError, match="ends in a Conv2D, not a dense layer"):
        models.build("unet", (8, 8, 1), {"a": 2, "b": 1}, width=2, depth=1)


def test_a_two_output_pipeline_budgets_the_first_output_and_reports_both(tmp_path, capsys, small_pipeline):
    report, printed, out = small_pipeline("{spec: digits-multi, val_fraction: 0.25}", 50.0,
                                          "{model: cnn, args: {width: 8, dropout: 0.0}, train: {epochs: 20}}",
                                          "{sparsity: 0.5, epochs: 1}")
    assert "pp test digit_accuracy drop" in printed
    assert report["dataset"]["heads"] == {"digit": "classification", "centre": "regression"}
    assert report["choice"]["metric"] == "digit_accuracy"
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows["prune_int8"]["outputs"]) == {"digit_accuracy", "centre_mae"}
    assert rows["teacher_fp32"]["outputs"]["digit_accuracy"] == rows["teacher_fp32"]["metric"]["value"] > 0.5
    assert set(report["final"]["outputs"]) == {"digit", "centre"}
    markdown = (out / "report.md").read_text()
    assert "### Output `centre`" in markdown and "| test centre_mae |" in markdown
    assert (out / "plots" / "confusion_digit.png").is_file() and (out / "plots" / "predictions_centre.png").is_file()
    shipped = out / "tflite_models" / "prune_int8.tflite"
    sidecar = json.loads(shipped.with_name("prune_int8.tflite.json").read_text())
    assert sidecar["outputs"] == ["digit", "centre"] and set(sidecar["verification"]["outputs"]) == {"digit", "centre"}
    raw = load_data("digits").with_scaling({"scale": 1.0, "offset": 0.0}).x_test[:2]
    np.savez(tmp_path / "two.npz", x=raw)
    assert main(["predict", str(shipped), str(tmp_path / "two.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("digit " in line and "; centre " in line for line in lines)
    assert main(["convert", str(out / "models" / "prune.keras"), "--data", "digits-multi",
                 "--out", str(tmp_path / "m.onnx")]) == 1
    assert "converts to .tflite in the modes" in capsys.readouterr().err


@pytest.mark.slow  # about a minute; the pipeline above shares its stages but qat and auto
def test_a_two_output_model_goes_through_prune_qat_auto_convert_and_bench(tmp_path, capsys):
    data = ["--data", "digits-multi"]
    assert main(["train", "--model", "cnn", "--model-arg", "width=8", *data, "--epochs", "15",
                 "--out", str(tmp_path / "t.keras")]) == 0
    assert main(["prune", str(tmp_path / "t.keras"), *data, "--max-drop", "2", "--epochs", "2",
                 "--out", str(tmp_path / "p.keras"), "--json", str(tmp_path / "p.json")]) == 0
    assert "fine-tuning on the targets, without distillation" in capsys.readouterr().out
    pruned = json.loads((tmp_path / "p.json").read_text())
    assert pruned["budget"]["metric"] == "digit_accuracy" and pruned["search"]["chosen"]
    assert main(["qat", str(tmp_path / "p.keras"), *data, "--preserve", "sparsity", "--epochs", "1",
                 "--out", str(tmp_path / "q.keras")]) == 0
    assert main(["convert", str(tmp_path / "q.keras"), *data, "--quantize", "auto", "--max-drop", "2",
                 "--out", str(tmp_path / "q.tflite")]) == 0
    assert main(["bench", str(tmp_path / "t.keras"), str(tmp_path / "q.tflite"), *data, "--runs", "3",
                 "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert all(set(r["outputs"]) == {"digit_accuracy", "centre_mae"} for r in rows)
    assert abs(rows[1]["outputs"]["centre_mae"] - rows[0]["outputs"]["centre_mae"]) < 0.2


def test_fine_tuning_uses_the_loss_and_weights_a_keras3_file_was_compiled_with(tmp_path, capsys):
    """The file's own MAE for a regressor and its loss weights for two outputs; cross-entropy stays from logits."""
    import keras as keras3

    data = load_data("digits-multi")
    inp = keras3.Input(data.input_shape)
    features = keras3.layers.GlobalAveragePooling2D()(keras3.layers.Conv2D(8, 3, activation="relu")(inp))
    model = keras3.Model(inp, [keras3.layers.Dense(10, name="digit")(features),
                               keras3.layers.Dense(2, name="centre")(features)])
    model.compile(optimizer="adam", loss={"digit": keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
                                          "centre": "mae"}, loss_weights={"digit": 1.0, "centre": 0.0})
    model.save(tmp_path / "two.keras")
    assert main(["prune", str(tmp_path / "two.keras"), "--data", "digits-multi", "--sparsity", "0.5", "--epochs", "2",
                 "--out", str(tmp_path / "p.keras"), "--json", str(tmp_path / "p.json")]) == 0
    assert "fine-tuning as two.keras was compiled: loss {digit: SparseCategoricalCrossentropy, centre: mae}, " \
           "loss weights {'digit': 1.0, 'centre': 0.0}" in capsys.readouterr().out
    history = json.loads((tmp_path / "p.json").read_text())["fine_tune"]["history"]
    digit = next(v for k, v in history.items() if k.endswith("digit_loss") and not k.startswith("val_"))
    assert history["loss"] == pytest.approx(digit, rel=1e-4)  # the centre's weight 0: its loss adds nothing
    assert json.loads((tmp_path / "p.keras.json").read_text())["compile"]["loss_weights"]["centre"] == 0.0
    import kerascomp  # the Python API reads the compile config of a model in memory as the CLI reads a file's

    _, metrics = kerascomp.prune(model, data, kerascomp.PruneConfig(sparsity=0.5, epochs=1))
    history = metrics["fine_tune"]["history"]
    digit = next(v for k, v in history.items() if k.endswith("digit_loss") and not k.startswith("val_"))
    assert history["loss"] == pytest.approx(digit, rel=1e-4)

    regressor = keras3.Model(inp, keras3.layers.Dense(2, name="centre")(features))
    regressor.compile(optimizer="adam", loss="mae")
    regressor.save(tmp_path / "reg.keras")
    np.savez(tmp_path / "centre.npz", x=data.x_train, y=data.y_train["centre"])
    assert main(["prune", str(tmp_path / "reg.keras"), "--data", str(tmp_path / "centre.npz"), "--sparsity", "0.5",
                 "--epochs", "2", "--distill-from", "none", "--out", str(tmp_path / "r.keras"),
                 "--json", str(tmp_path / "r.json")]) == 0
    history = json.loads((tmp_path / "r.json").read_text())["fine_tune"]["history"]
    assert history["loss"] == pytest.approx(history["mae"], rel=1e-4)  # trained on the MAE, not the task's MSE
