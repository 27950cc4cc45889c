"""Every command of ``kerascomp --help``: the success paths no other file covers (``models``, ``predict``
on an .npz, ``qat``) and a table of bad input with its exit code pinned: 2 for usage errors (click:
missing or unknown option, bad choice, bad type), 1 for input kerascomp refuses. Each gives one
``Error:`` line, no traceback, and writes nothing.

Success paths tested elsewhere: train (test_cli), convert/bench (test_bench, test_onnx), predict on a PNG
(test_bench), run/report (test_pipeline), distill (test_distill), sweep (test_sweep), swap (test_swap),
prune (test_prune), cluster (test_cluster), sensitivity (test_sensitivity), inspect (test_byom_cli).
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from kerascomp import models
from kerascomp.cli import cli, main
from kerascomp.export import export
from kerascomp.saving import load_meta, load_model


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tflite(digits, digits_model, tmp_path_factory):
    source, model = digits_model
    path = tmp_path_factory.mktemp("tflite") / "cnn.tflite"
    export(model, path, data=digits, source=source)
    return path


def test_every_command_in_help_has_a_bad_input_case(capsys):
    code, out, _ = run(capsys, "--help")
    listed = re.findall(r"^  (\w+) ", out.split("Commands:")[1], flags=re.M)
    assert code == 0 and sorted(listed) == cli.list_commands(None) == sorted(COMMANDS)


def test_models_lists_every_zoo_model_with_its_defaults(capsys):
    code, out, err = run(capsys, "models")
    assert code == 0 and err == ""
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert set(lines) == set(models.available()) == {"cnn", "efficientnet_b0", "mlp", "mobilenet_v2", "unet", "vit"}
    assert lines["cnn"].startswith("width=32, depth=2") and "hidden=(1200, 1200)" in lines["mlp"]


def test_predict_npz_classifies_each_raw_image_like_the_keras_model(capsys, tmp_path, digits, digits_model, tflite):
    raw = digits.with_scaling({"scale": 1.0, "offset": 0.0}).x_test[:20, ..., 0]  # (N, 8, 8) pixels 0..16
    np.savez(tmp_path / "raw.npz", x_test=raw.astype(np.uint8))
    code, out, err = run(capsys, "predict", tflite, tmp_path / "raw.npz", "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{tmp_path / 'raw.npz'}[{i}]" for i in range(20)]
    expected = digits_model[1].predict(digits.x_test[:20], verbose=0).argmax(1)
    for line, label in zip(lines, expected):
        (first, p1), (_, p2) = [pair.split() for pair in line.split(": ")[1].split(", ")]
        assert first == str(label) and 1.0 >= float(p1) >= float(p2) >= 0.0


def test_predict_takes_a_folder_of_images_in_sorted_order(capsys, tmp_path, tflite):
    """A folder stands for the images in it (it said 'input pngs not found' for an existing folder)."""
    from PIL import Image

    for name in ("b.png", "a.png", "sub/c.png"):
        (tmp_path / "pngs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), color=90).save(tmp_path / "pngs" / name)
    code, out, err = run(capsys, "predict", tflite, tmp_path / "pngs")
    assert code == 0, err
    assert [line.split(": ")[0] for line in out.strip().splitlines()] == [
        str(tmp_path / "pngs" / n) for n in ("a.png", "b.png", "sub/c.png")]


def test_predict_warns_once_when_inputs_look_like_another_pixel_range(capsys, tmp_path, tflite):
    """0..255 images for a model trained on 0..16 digits ran silently with other confidences."""
    np.savez(tmp_path / "bright.npz", x=np.full((3, 8, 8), 200, np.uint8))
    code, out, err = run(capsys, "predict", tflite, tmp_path / "bright.npz")
    assert code == 0 and err.count("warning:") == 1 and "trained on 0..16" in err and len(out.splitlines()) == 3
    np.savez(tmp_path / "digits.npz", x=np.full((3, 8, 8), 12, np.uint8))
    code, out, err = run(capsys, "predict", tflite, tmp_path / "digits.npz")
    assert code == 0 and "warning" not in err


def test_predict_runs_on_the_edge_path_without_tensorflow(tmp_path, digits, tflite):
    """``predict`` is what a device without TensorFlow runs: the command never imports TensorFlow."""
    np.savez(tmp_path / "raw.npz", x_test=digits.x_test[:3, ..., 0].astype(np.float32))
    code = ("import sys\n"
            "from kerascomp.cli import main\n"
            f"assert main(['predict', {str(tflite)!r}, {str(tmp_path / 'raw.npz')!r}]) == 0\n"
            "print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_qat_fine_tunes_saves_a_loadable_model_and_reports(capsys, tmp_path, digits, digits_model):
    out, report = tmp_path / "q.keras", tmp_path / "q.json"
    code, stdout, err = run(capsys, "qat", digits_model[0], "--epochs", "1", "--batch-size", "128", "--out", out,
                            "--json", report)
    assert code == 0, err
    metrics = json.loads(report.read_text())
    assert metrics["out"] == str(out) and metrics["float_layers"] == [] and metrics["fine_tune"]["epochs"] == 1
    model = load_model(out)
    assert any("Quantize" in type(layer).__name__ for layer in model.layers)
    accuracy = float((model.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"]) and accuracy > 0.85
    assert load_meta(out)["compression"][-1]["stage"] == "qat"
    assert f"-> {out}" in stdout and "kernel sparsity" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.json", "q.keras", "q.keras.json"]


def _inputs(folder):
    """Bad input files, written before each case so that anything a failing command adds shows up."""
    folder.joinpath("garbage.keras").write_text("not a model")
    folder.joinpath("garbage.tflite").write_text("not a model")
    folder.joinpath("bad.png").write_bytes(b"not a png")
    folder.joinpath("afile").write_text("a file where a folder is needed")
    folder.joinpath("bad.yaml").write_text("stages: [\n")
    folder.joinpath("badrun").mkdir()
    folder.joinpath("badrun", "report.json").write_text("{not json")
    np.savez(folder / "imgs.npz", x=np.zeros((3, 8, 8), np.uint8))
    np.savez(folder / "noimages.npz", labels=np.zeros(3))
    np.savez(folder / "wrong.npz", x=np.zeros((3, 5, 5)))
    np.savez(folder / "nan.npz", x=np.full((3, 8, 8), np.nan))
    rng = np.random.default_rng(0)
    np.savez(folder / "tiny.npz", x=rng.integers(0, 255, (30, 12, 12), dtype=np.uint8), y=np.arange(30) % 3)


# (command line, exit code, part of the one Error: line); MODEL is the trained digits cnn, TFLITE its fp32
# .tflite, other paths are in the case's own folder (the working directory).
BAD_INPUT = [
    (["train", "--model", "cnn", "--unknown", "1"], 2, "No such option '--unknown'"),
    (["convert", "MODEL", "--quantize", "int4"], 2, "'int4' is not one of"),
    (["convert", "MODEL", "--opset", "x", "--out", "m.onnx"], 2, "'x' is not a valid integer"),
    (["convert", "MODEL", "--out", "m.pb"], 1, "must end in .tflite or .onnx"),
    (["convert", "missing.keras", "--out", "m.onnx"], 1, "model file missing.keras not found"),
    (["convert", "MODEL", "--quantize", "dynamic", "--out", "m.onnx"], 1, ".onnx supports --quantize none, int8"),
    (["convert", "MODEL", "--quantize", "int8", "--data", "digits", "--calibration-size", "0", "--out", "m.onnx"],
     1, "--calibration-size must be at least 1, got 0"),
    (["convert", "MODEL", "--quantize", "int8", "--data", "digits", "--calibration-size", "-5", "--out", "m.tflite"],
     1, "--calibration-size must be at least 1, got -5"),
    (["convert", "MODEL", "--out", "afile/m.tflite"], 1, "afile: File exists"),
    (["convert", "MODEL", "--quantize", "int8", "--out", "m.tflite"], 2, "--quantize int8 needs --data"),
    (["convert", "MODEL", "--quantize", "auto"], 2, "--quantize auto needs --data"),
    (["predict", "TFLITE"], 2, "Missing argument 'IMAGE_FOLDER_OR_NPZ...'"),
    (["predict", "TFLITE", "imgs.npz", "--top-k", "0"], 2, "0 is not in the range x>=1"),
    (["predict", "missing.tflite", "imgs.npz"], 1, "no such TFLite file: missing.tflite"),
    (["predict", "garbage.tflite", "imgs.npz"], 1, "garbage.tflite is not a usable TFLite model"),
    (["predict", "MODEL", "imgs.npz"], 2, "convert"),
    (["predict", "TFLITE", "badrun"], 1, "input folder badrun holds no images"),
    (["predict", "TFLITE", "missing.png"], 1, "input missing.png not found"),
    (["predict", "TFLITE", "bad.png"], 1, "cannot read image bad.png"),
    (["predict", "TFLITE", "noimages.npz"], 1, "noimages.npz has no x_test or x array"),
    (["predict", "TFLITE", "wrong.npz"], 1, "images are (5, 5, 1) but the model expects (8, 8, 1)"),
    (["predict", "TFLITE", "nan.npz"], 1, "nan.npz[0] holds NaN or Inf values"),
    (["predict", "TFLITE", "imgs.npz", "--threads", "0"], 1, "threads must be an integer >= 1"),
    (["bench"], 2, "Missing argument 'ARTIFACT...'"),
    (["bench", "TFLITE", "--threads", "1,two"], 2, "--threads expects integers"),
    (["bench", "TFLITE", "--op-resolver", "gpu"], 2, "'gpu' is not one of"),
    (["bench", "TFLITE", "--runs", "0", "--json", "b.json"], 1, "runs and thread counts must be at least 1"),
    (["run", "bad.yaml"], 2, "Missing option '--out'"),
    (["run", "missing.yaml", "--out", "r"], 1, "config not found: missing.yaml"),
    (["run", "bad.yaml", "--out", "r"], 1, "bad.yaml: not valid YAML"),
    (["report"], 2, "Missing argument 'DIR'"),
    (["report", "afile"], 2, "'afile' is a file"),
    (["report", "missing"], 1, "missing/report.json not found"),
    (["report", "badrun"], 1, "badrun/report.json is not valid JSON"),
    (["distill", "--student", "cnn", "--out", "s.keras"], 2, "Missing option '--teacher'"),
    (["distill", "--teacher", "missing.keras", "--student", "cnn", "--out", "s.keras"], 1, "not found"),
    (["distill", "--teacher", "MODEL", "--student", "resnet", "--out", "s.keras"], 1, "unknown model 'resnet'"),
    (["sweep", "--teacher", "MODEL", "--out", "sw"], 2, "Missing option '--grid'"),
    (["sweep", "--teacher", "MODEL", "--grid", "beta=1,2", "--out", "sw"], 1, "unknown grid key 'beta'"),
    (["sweep", "--teacher", "MODEL", "--grid", "seed=1,2", "--num-samples", "3", "--out", "sw"], 1,
     "drop the 'seed' grid key"),
    (["sweep", "--teacher", "MODEL", "--grid", "alpha=0.5", "--num-samples", "0"], 2, "0 is not in the range x>=1"),
    (["swap", "MODEL", "--candidates", "teleport", "--out", "s.keras"], 1, "unknown candidate(s) teleport"),
    (["swap", "MODEL", "--order", "random", "--out", "s.keras"], 2, "'random' is not one of"),
    (["swap", "missing.keras", "--out", "s.keras"], 1, "model file missing.keras not found"),
    (["prune", "MODEL", "--schedule", "cubic", "--sparsity", "0.5"], 2, "'cubic' is not one of"),
    (["prune", "MODEL", "--sparsity", "0.5", "--structure", "3:4", "--out", "p.keras"], 1, "3:4"),
    (["cluster", "MODEL", "--clusters", "many"], 2, "'many' is not a valid integer"),
    (["cluster", "garbage.keras", "--out", "c.keras"], 1, "cannot load garbage.keras"),
    (["shrink", "MODEL", "--keep", "1.5", "--out", "s.keras"], 1, "keep must be in (0, 1]"),
    (["shrink", "MODEL", "--out", "s.keras"], 1, "keep is required"),
    (["shrink", "MODEL", "--keep", "0.5", "--target", "flops"], 2, "'flops' is not one of"),
    (["qat", "MODEL", "--epochs", "0", "--out", "q.keras"], 1, "epochs must be at least 1"),
    (["qat", "MODEL", "--out", "q.h5"], 1, "must end in .keras"),
    (["sensitivity"], 2, "Missing argument 'MODEL.keras'"),
    (["sensitivity", "missing.keras"], 1, "model file missing.keras not found"),
    (["inspect", "MODEL", "--color-mode", "cmyk"], 2, "'cmyk' is not one of"),
    (["inspect", "missing.keras"], 1, "model file missing.keras not found"),
    (["inspect", "garbage.keras"], 1, "cannot load garbage.keras"),
    (["inspect", "MODEL", "--json", "i.txt"], 1, "must end in .json"),
    (["inspect", "MODEL", "--data", "tiny.npz"], 1, "has inputs (12, 12, 1) but"),
    (["models", "extra"], 2, "unexpected extra argument (extra)"),
]
COMMANDS = {case[0][0] for case in BAD_INPUT}


@pytest.mark.parametrize("argv, expected, message", BAD_INPUT, ids=[" ".join(c[0]) for c in BAD_INPUT])
def test_bad_input_exits_with_its_code_one_error_line_and_writes_nothing(capsys, tmp_path, monkeypatch, digits_model,
                                                                         tflite, argv, expected, message):
    _inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # default outputs (e.g. MODEL_qat.keras, sweep/) would land here too
    before = sorted(tmp_path.rglob("*"))
    model_folder = sorted(digits_model[0].parent.iterdir())
    replace = {"MODEL": str(digits_model[0]), "TFLITE": str(tflite)}
    code, _, err = run(capsys, *(replace.get(a, a) for a in argv))
    lines = err.strip().splitlines()
    assert code == expected, err
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], err
    assert not lines[0].startswith("Error: unexpected ")  # a known bad input, not an internal error
    assert sorted(tmp_path.rglob("*")) == before and sorted(digits_model[0].parent.iterdir()) == model_folder
