"""Keras 3 models through every command, end to end from the CLI, and bad data refused before training."""

import json
import re
from pathlib import Path

import keras as keras3
import numpy as np
import pytest

from kerascomp.cli import main

L = keras3.layers


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _functional():
    inp = keras3.Input((8, 8, 1))
    h = L.RandomTranslation(0.05, 0.05)(inp)
    h = L.Rescaling(1 / 16)(h)
    h = L.Conv2D(32, 3, padding="same")(h)
    h = L.BatchNormalization()(h)
    h = L.Activation("relu")(h)
    h = L.Add()([h, L.Conv2D(32, 3, padding="same", activation="relu")(h)])
    h = L.Conv2D(64, 3, padding="same", activation="relu")(L.MaxPooling2D()(h))
    h = L.GlobalAveragePooling2D()(h)
    return keras3.Model(inp, L.Dense(10, activation="softmax")(h))


def _sequential():
    return keras3.Sequential([keras3.Input((8, 8, 1)), L.Rescaling(1 / 16), L.Conv2D(8, 3, activation="relu"),
                              L.Flatten(), L.Dropout(0.2), L.Dense(10, activation="softmax")])


def _nested():
    block = keras3.Sequential([keras3.Input((8, 8, 16)), L.Conv2D(16, 3, padding="same"), L.ReLU()], name="block")
    inp = keras3.Input((8, 8, 1))
    h = block(L.Conv2D(16, 3, padding="same", activation="relu")(L.Rescaling(1 / 16)(inp)))
    return keras3.Model(inp, L.Dense(10)(L.GlobalAveragePooling2D()(h)))


pytestmark = pytest.mark.xdist_group("keras3_models")  # one worker trains the module's Keras 3 models (18 s), not each


@pytest.fixture(scope="module")
def keras3_models(digits, tmp_path_factory):
    """Keras 3 models trained on raw digits (0..16) of kerascomp's training split, saved as users do."""
    folder = tmp_path_factory.mktemp("keras3")
    raw = digits.with_scaling({"scale": 1.0, "offset": 0.0})
    keras3.utils.set_random_seed(0)
    paths = {}
    for name, build in (("functional", _functional), ("sequential", _sequential), ("nested", _nested)):
        model = build()
        model.compile(optimizer=keras3.optimizers.Adam(3e-3), loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=name == "nested"),
                      metrics=["accuracy"])
        model.fit(raw.x_train, raw.y_train, epochs=30, batch_size=32, verbose=0)
        paths[name] = folder / f"{name}.keras"
        model.save(paths[name])
    return paths, raw


def test_keras3_functional_prune_pqat_int8_agrees_with_keras3(capsys, tmp_path, keras3_models):
    paths, raw = keras3_models
    model3 = keras3.models.load_model(paths["functional"])
    keras3_pred = np.asarray(model3.predict(raw.x_test, verbose=0)).argmax(1)
    pruned, qat, tflite = tmp_path / "p.keras", tmp_path / "q.keras", tmp_path / "q_int8.tflite"
    steps = [("prune", paths["functional"], "--sparsity", "0.5", "--epochs", "2", "--out", pruned),
             ("qat", pruned, "--preserve", "sparsity", "--epochs", "2", "--out", qat),
             ("convert", qat, "--quantize", "int8", "--data", "digits", "--out", tflite)]
    for command, *args in steps:
        code, out, err = run(capsys, command, *args)
        assert code == 0, err
    code, out, err = run(capsys, "bench", paths["functional"], tflite, "--data", "digits", "--runs", "5",
                         "--json", tmp_path / "b.json")
    assert code == 0, err
    results = {r["name"]: r for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    keras3_accuracy = float((keras3_pred == raw.y_test).mean())
    assert results["functional"]["accuracy"] == pytest.approx(keras3_accuracy)  # imported model == Keras 3 model
    from kerascomp import runtime

    int8_pred = runtime.load(tflite).predict(runtime.load(tflite).preprocess(raw.x_test)).argmax(1)
    # measured 0.953 after 2 + 2 fine-tuning epochs: what is lost is the fine-tuning recipe's, not the import's
    assert (int8_pred == keras3_pred).mean() >= 0.93
    assert results["q_int8"]["accuracy"] >= keras3_accuracy - 0.04  # measured -2.0 pp


@pytest.mark.parametrize("kind", ["sequential", "nested"])
def test_keras3_models_inspect_cluster_and_distill(capsys, tmp_path, keras3_models, kind):
    paths, _ = keras3_models
    code, out, err = run(capsys, "inspect", paths[kind], "--data", "digits", "--json", tmp_path / "i.json")
    assert code == 0, err
    assert "keras3" in out
    report = json.loads((tmp_path / "i.json").read_text())
    assert report["import"]["max_abs_diff"] <= 1e-4 and report["input_scaling"] == {"scale": 1.0, "offset": 0.0}
    code, out, err = run(capsys, "cluster", paths[kind], "--clusters", "8", "--epochs", "1", "--out", tmp_path / "c.keras")
    assert code == 0, err
    test_before = float(out.split("test ")[1].split(" ->")[0])
    assert test_before > 0.85  # the imported model, fed raw pixels, is as good as the Keras 3 one
    assert max(int(v) for v in out.split("distinct values per layer: ")[1].replace(",", "").split()[1::2]) <= 8
    code, out, err = run(capsys, "distill", "--teacher", paths[kind], "--student", "cnn", "--student-arg", "width=4",
                         "--epochs", "2", "--out", tmp_path / "s.keras")
    assert code == 0, err
    assert float(out.split("teacher ")[1].split()[0]) > 0.85  # the teacher saw raw pixels, as it was trained


@pytest.mark.parametrize("command, options", [("prune", ("--sparsity", "0.5")), ("cluster", ("--clusters", "8"))])
def test_a_keras3_file_in_gives_a_keras3_file_out_with_the_same_predictions(capsys, tmp_path, keras3_models, command,
                                                                              options):
    """The output format follows the input's: Keras 3 loads the result (softmax back) and predicts what kerascomp's
    tf_keras model of the same file predicts."""
    from kerascomp.saving import load

    paths, raw = keras3_models
    out = tmp_path / "out3.keras"
    code, _, err = run(capsys, command, paths["sequential"], *options, "--epochs", "1", "--out", out)
    assert code == 0, err
    back = keras3.models.load_model(out, safe_mode=True)
    assert type(back.layers[-1]).__name__ == "Softmax"  # the split-off softmax is back
    model, _ = load(out)  # and kerascomp reads it again
    logits = model.predict(raw.x_test, verbose=0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(np.asarray(back.predict(raw.x_test, verbose=0)), probs / probs.sum(1, keepdims=True),
                               atol=1e-5)


def test_qat_of_a_keras3_file_stays_tf_keras_and_says_so_once(capsys, tmp_path, keras3_models):
    paths, _ = keras3_models
    code, out, err = run(capsys, "qat", paths["sequential"], "--epochs", "1", "--out", tmp_path / "q.keras")
    assert code == 0, err
    assert (out + err).count("stays a tf_keras file") == 1 and "kerascomp convert" in out + err
    with pytest.raises((TypeError, ValueError)):  # not a Keras 3 file
        keras3.models.load_model(tmp_path / "q.keras", safe_mode=True)
    code, _, err = run(capsys, "qat", paths["sequential"], "--save-format", "keras3", "--out", tmp_path / "q3.keras")
    assert code == 2 and "stays tf_keras" in err and not (tmp_path / "q3.keras").exists()


def test_pipeline_starts_from_a_keras3_teacher(capsys, tmp_path, keras3_models):
    paths, _ = keras3_models
    config = tmp_path / "c.yaml"
    config.write_text(f"""seed: 0
data: {{spec: digits}}
teacher: {{path: {paths['functional']}}}
stages:
  - prune: {{sparsity: 0.5, epochs: 1}}
  - convert: {{models: [teacher, prune], quantize: [fp32]}}
  - bench: {{threads: [1], runs: 5}}
summary: {{baseline: teacher_fp32, final: prune_fp32}}
""")
    code, out, err = run(capsys, "run", config, "--out", tmp_path / "run")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    results = {r["name"]: r["accuracy"] for r in report["results"]}
    assert results["teacher_fp32"] > 0.9  # fed raw pixels, as the Keras 3 model expects
    # the last lines: the direction of every ratio, and the file to ship
    assert re.search(r"prune_fp32 vs teacher_fp32: [\d.]+x smaller \(gzip\), [\d.]+x (faster|slower) \(p50\)", out)
    shipped = tmp_path / "run" / report["summary"]["path"]
    assert out.splitlines()[-2] == f"ship: {shipped}" and shipped.is_file()
    assert results["prune_fp32"] > 0.85  # measured 0.92 after one pruning epoch


@pytest.mark.slow  # 43 s, most of it Keras 3 building MobileNetV2; the quick suite imports smaller Keras 3 models
def test_mobilenetv2_keras3_through_inspect_convert_and_bench(capsys, tmp_path):
    model3 = keras3.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4)
    model3.save(tmp_path / "mnv2.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), y=np.arange(40) % 4)
    code, out, err = run(capsys, "inspect", tmp_path / "mnv2.keras", "--json", tmp_path / "i.json")
    assert code == 0, err
    report = json.loads((tmp_path / "i.json").read_text())
    assert report["params"] == model3.count_params() and "DEPTHWISE_CONV_2D" in report["tflite_ops"]
    code, _, err = run(capsys, "convert", tmp_path / "mnv2.keras", "--data", tmp_path / "d.npz",
                       "--out", tmp_path / "m.tflite")
    assert code == 0, err
    code, out, err = run(capsys, "bench", tmp_path / "m.tflite", "--data", tmp_path / "d.npz", "--runs", "3")
    assert code == 0 and "| m |" in out


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.full((30, 8, 8), np.nan), "y": np.arange(30) % 3}, "NaN or Inf"),
    ({"x": np.ones((30, 8, 8)), "y": np.zeros(30)}, "at least two classes"),
    ({"x": np.ones((30, 8, 8)), "y": np.full(30, 0.5)}, "nothing to learn"),  # float targets: regression
    ({"x": np.ones((30, 8, 8)), "y": np.arange(29) % 3}, "30 images but 29 labels"),
    ({"x": np.ones((30, 8)), "y": np.arange(30) % 3}, "must be images"),
])
def test_bad_training_data_is_one_error_line_and_nothing_written(capsys, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "m.keras"
    code, _, err = run(capsys, "train", "--model", "mlp", "--data", tmp_path / "bad.npz", "--epochs", "1", "--out", out)
    assert code == 1 and err.startswith("Error:") and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_model_that_cannot_take_the_data_is_refused(capsys, tmp_path, image_npz, keras3_models):
    paths, _ = keras3_models
    code, _, err = run(capsys, "prune", paths["sequential"], "--sparsity", "0.5", "--data", image_npz,
                       "--out", tmp_path / "p.keras")
    assert code == 1 and err.startswith("Error:") and not (tmp_path / "p.keras").exists()


def test_grayscale_images_loaded_as_rgb_are_refused_before_any_work_with_the_fix(capsys, tmp_path, keras3_models):
    """It printed the plan, then 'Error: unexpected ValueError: in user code:'."""
    from PIL import Image

    paths, _ = keras3_models
    for label in range(10):
        (tmp_path / "pngs" / str(label)).mkdir(parents=True)
        Image.new("L", (8, 8), color=label * 20).save(tmp_path / "pngs" / str(label) / "a.png")
    code, out, err = run(capsys, "prune", paths["sequential"], "--sparsity", "0.5", "--data", tmp_path / "pngs",
                         "--out", tmp_path / "p.keras")
    assert code == 1 and err.count("\n") == 1 and "--color-mode grayscale" in err and "pre-flight" not in out
    assert not (tmp_path / "p.keras").exists()


def test_run_from_your_own_model_refuses_images_it_cannot_read_in_one_line_naming_both_fixes(capsys, tmp_path,
                                                                                            keras3_models):
    """configs/custom_model.yaml hard-coded 96x96 rgb: a model of another input met 'unexpected ValueError'."""
    from PIL import Image

    paths, _ = keras3_models
    for label in range(10):
        (tmp_path / "pngs" / str(label)).mkdir(parents=True)
        Image.new("L", (16, 16), color=label * 20).save(tmp_path / "pngs" / str(label) / "a.png")
    config = Path(__file__).resolve().parents[1] / "configs" / "custom_model.yaml"
    code, out, err = run(capsys, "run", config, "--out", tmp_path / "run",
                         "--set", f"teacher.path={paths['sequential']}", "--set", f"data.spec={tmp_path / 'pngs'}")
    assert code == 1 and err.count("\n") == 1 and "[prune]" not in out
    assert "expects inputs (8, 8, 1)" in err and "grayscale" in err and "resize them to 8x8" in err


def test_predict_warns_once_when_it_resizes(capsys, tmp_path, digits_model):
    from PIL import Image

    path, _ = digits_model
    code, _, err = run(capsys, "convert", path, "--out", tmp_path / "m.tflite")
    assert code == 0, err
    for i in range(2):
        Image.fromarray(np.full((16, 16), 200 * i, np.uint8)).save(tmp_path / f"{i}.png")
    code, out, err = run(capsys, "predict", tmp_path / "m.tflite", tmp_path / "0.png", tmp_path / "1.png")
    assert code == 0 and err.count("resized to the model's 8x8") == 1 and out.count(".png:") == 2


def test_the_python_api_feeds_a_model_the_input_scaling_it_was_loaded_with(keras3_models, digits):
    """kerascomp.load of a raw-pixel model, then kerascomp.prune with scaled data, measured 0.289 where the CLI said
    0.88: the scaling now travels with the model (and with what a technique makes of it); a Keras 3 model in memory
    is imported as its file would be (it was 'Keras 3 models cannot be compressed with tfmot')."""
    import kerascomp

    paths, _ = keras3_models
    model, _ = kerascomp.load(paths["functional"], digits)
    pruned, metrics = kerascomp.prune(model, digits, kerascomp.PruneConfig(sparsity=0.5, epochs=1, verbose=0))
    assert metrics["baseline"]["val_accuracy"] > 0.85
    _, again = kerascomp.cluster(pruned, digits, kerascomp.ClusterConfig(clusters=16, epochs=1, verbose=0))
    assert again["baseline"]["val_accuracy"] > 0.8  # the pruned model still gets raw pixels
    in_memory = keras3.models.load_model(paths["functional"])
    _, metrics = kerascomp.cluster(in_memory, digits, kerascomp.ClusterConfig(clusters=16, epochs=1, verbose=0))
    assert metrics["baseline"]["val_accuracy"] > 0.85


def test_a_file_converted_without_data_records_its_scaling_as_unknown_and_bench_says_so(capsys, tmp_path,
                                                                                         keras3_models):
    """It recorded scale 1.0 (a guess), and bench fed the file 0..16 pixels: 35 % for a 93 % model."""
    paths, _ = keras3_models
    code, _, err = run(capsys, "convert", paths["nested"], "--out", tmp_path / "n.tflite")
    assert code == 0, err
    assert json.loads((tmp_path / "n.tflite.json").read_text())["scaling"] == {"scale": 1.0, "offset": 0.0}  # raw: known
    plain = keras3.Sequential([keras3.Input((8, 8, 1)), L.Flatten(), L.Dense(10)])
    plain.save(tmp_path / "plain.keras")
    code, _, err = run(capsys, "convert", tmp_path / "plain.keras", "--out", tmp_path / "p.tflite")
    assert code == 0, err
    assert json.loads((tmp_path / "p.tflite.json").read_text())["scaling"] is None
    with pytest.warns(UserWarning, match="input scaling it expects is unknown"):
        code, _, err = run(capsys, "bench", tmp_path / "p.tflite", "--data", "digits", "--runs", "2")
    assert code == 0, err


def test_qat_of_a_model_that_rescales_0_to_255_pixels_itself_converts_to_int8_that_agrees(capsys, tmp_path, digits):
    """The most common Keras 3 input pipeline (Rescaling(1/255) inside): QAT's int8 file agreed with the QAT model on
    8.9 % of inputs (the converter had no range for the Rescaling output and dropped its scale)."""
    raw = digits.with_scaling({"scale": 16.0, "offset": 0.0})  # digits as 0..255 pixels
    np.savez(tmp_path / "d255.npz", x_train=np.concatenate([raw.x_train, raw.x_val])[..., 0].astype(np.uint8),
             y_train=np.concatenate([raw.y_train, raw.y_val]), x_test=raw.x_test[..., 0].astype(np.uint8),
             y_test=raw.y_test)
    keras3.utils.set_random_seed(0)
    inp = keras3.Input((8, 8, 1))
    h = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(L.Rescaling(1 / 255)(inp))))
    h = L.GlobalAveragePooling2D()(L.Add()([h, L.Conv2D(16, 3, padding="same", activation="relu")(h)]))
    model = keras3.Model(inp, L.Dense(10, activation="softmax")(h))
    model.compile(optimizer=keras3.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(raw.x_train, raw.y_train, epochs=10, batch_size=32, verbose=0)
    model.save(tmp_path / "m.keras")
    code, _, err = run(capsys, "qat", tmp_path / "m.keras", "--data", tmp_path / "d255.npz", "--epochs", "1",
                       "--out", tmp_path / "q.keras")
    assert code == 0, err
    code, out, err = run(capsys, "convert", tmp_path / "q.keras", "--data", tmp_path / "d255.npz",
                         "--quantize", "int8", "--out", tmp_path / "q.tflite")
    assert code == 0, err
    assert float(out.split("top-1 agreement ")[1].split("%")[0]) >= 99.0
