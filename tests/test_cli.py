import json
import subprocess
import sys

import numpy as np
import pytest

from kerascomp import __version__
from kerascomp.cli import main
from kerascomp.saving import load_meta, load_model


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help_answer_without_error(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "train" in out


def test_help_and_config_checks_start_without_tensorflow():
    """Every command's help is built from the technique registry, so importing each technique must not import
    TensorFlow (seconds of start-up); ``kerascomp.backend`` defers it to the first ``tf.``/``keras.`` use."""
    code = ("import sys\n"
            "from kerascomp.cli import main\n"
            "from kerascomp.compress import registry\n"
            "for args in (['--help'], *([name, '--help'] for name in registry.techniques()), ['run', '--help']):\n"
            "    assert main(args) == 0, args\n"
            "print('tensorflow' in sys.modules, 'tf_keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"


def test_console_entry_point_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "kerascomp", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_train_writes_model_sidecar_and_metrics(capsys, tmp_path, digits):
    out, metrics_path = tmp_path / "m.keras", tmp_path / "m.json"
    code, stdout, _ = run(capsys, "train", "--model", "mlp", "--model-arg", "hidden=32,", "--data", "digits",
                          "--epochs", "2", "--out", str(out), "--json", str(metrics_path))
    assert code == 0, stdout
    metrics = json.loads(metrics_path.read_text())
    assert {"test_accuracy", "val_accuracy", "params", "epochs", "seconds_per_epoch"} <= metrics.keys()
    assert metrics["epochs"] == 2 and metrics["model"] == {"name": "mlp", "args": {"hidden": [32]}}
    model = load_model(out)
    accuracy = float((model.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"])
    assert load_meta(out)["data"]["class_names"] == list(digits.class_names)
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in stdout


def _bad_npz(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"garbage")
    return str(path)


def _wrong_shapes(tmp_path):
    path = tmp_path / "shapes.npz"
    np.savez(path, x=np.zeros((10, 5)), y=np.zeros(10, int))
    return str(path)


def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


@pytest.mark.parametrize("args, expected, message", [
    (["--data", "missing.npz"], 1, "not found"),
    (["--data", _bad_npz], 1, "cannot read"),
    (["--data", _wrong_shapes], 1, "must be images"),
    (["--data", _empty_folder], 1, "no class subfolders"),
    (["--model", "resnet9000"], 1, "unknown model 'resnet9000'"),
    (["--model-arg", "colour=3"], 1, "unknown argument(s) colour"),
    (["--model-arg", "depth"], 2, "expects key=value"),  # malformed option syntax is a usage error
    (["--epochs", "0"], 1, "epochs must be at least 1"),
    (["--epochs", "two"], 2, "'two' is not a valid integer"),
    (["--strategy", "tpu"], 2, "'tpu' is not one of"),
])
def test_bad_input_gives_one_error_line_and_writes_nothing(capsys, tmp_path, args, expected, message):
    args = [a(tmp_path) if callable(a) else a for a in args]
    base = {"--model": "cnn", "--data": "digits", "--epochs": "1"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    out = tmp_path / "never.keras"
    argv = ["train", *[x for kv in base.items() for x in kv], "--out", str(out)]
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == expected
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]
    assert not out.exists() and not list(tmp_path.glob("*.keras*"))


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "train", "--data", "digits")
    assert code == 2 and err.startswith("Error:") and "--model" in err


def test_wrong_output_suffix_is_refused_before_training(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--model", "mlp", "--out", str(tmp_path / "m.h5"))
    assert code == 1 and "must end in .keras" in err


def test_the_library_says_its_lines_through_one_echo_a_caller_can_redirect(capsys):
    from kerascomp import console

    console.echo("to stdout")
    lines = []
    previous = console.set_echo(lines.append)
    try:
        console.echo("to the caller")
    finally:
        console.set_echo(previous)
    assert lines == ["to the caller"] and capsys.readouterr().out == "to stdout\n"


def test_the_package_face_names_each_technique_function_after_itself():
    """``help(kerascomp.prune)`` said "apply"; the face holds no import helpers."""
    import pydoc

    import kerascomp

    assert kerascomp.prune.__name__ == "prune" and "prune(model" in pydoc.render_doc(kerascomp.prune, renderer=pydoc.plaintext)
    assert not {"find_spec", "import_module"} & set(vars(kerascomp))


def test_every_command_has_its_python_call_at_the_package_face(tmp_path, digits, digits_model):
    """convert, bench, inspect and run were only in submodules: a notebook user found none of them."""
    import kerascomp

    model = kerascomp.load_model(digits_model[0])
    report = kerascomp.convert(model, tmp_path / "m.tflite", quantize="int8", data=digits)
    assert report["verification"]["top1_agreement"] >= 0.9
    document = kerascomp.bench([tmp_path / "m.tflite"], digits, runs=5)
    assert document["results"][0]["accuracy"] > 0.9 and callable(kerascomp.bench.bench)
    assert kerascomp.inspect(digits_model[0])["params"] == model.count_params()
    assert [f.__name__ for f in (kerascomp.convert, kerascomp.inspect, kerascomp.run)] == ["convert", "inspect", "run"]


def test_a_techniques_python_call_passes_the_users_callbacks_to_its_fine_tuning(digits, digits_model):
    """tfmot's users bring their own model.fit callbacks; kerascomp.prune(..., callbacks=[...]) reaches the fit."""
    import kerascomp
    from kerascomp.backend import keras

    seen = []
    hook = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["val_accuracy"]))
    kerascomp.prune(kerascomp.load_model(digits_model[0]), digits,
                    kerascomp.PruneConfig(sparsity=0.5, epochs=2, verbose=0), callbacks=[hook])
    assert len(seen) == 2 and all(0 <= v <= 1 for v in seen)
