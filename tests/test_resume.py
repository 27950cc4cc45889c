"""``kerascomp run --resume`` re-runs exactly the stages whose inputs changed, by content, and says why."""

import json
import re

import numpy as np
import pytest
import yaml

from kerascomp.pipeline import fingerprint
from kerascomp.cli import main
from kerascomp.models import build
from kerascomp.saving import save_model


def _write_npz(path, seed):
    """Three classes of 12x12 images; another seed gives other images of the same shape and classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(120) % 3
    x = rng.integers(0, 60, size=(120, 12, 12), dtype=np.uint8)
    x[y == 1, :6] += 150
    x[y == 2, :, :6] += 150
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:], classes=np.array(["a", "b", "c"]))


def _config(folder, teacher):
    raw = {
        "seed": 0,
        "data": {"spec": str(folder / "data.npz")},
        "teacher": teacher,
        "stages": [
            {"train": {"name": "small", "model": "mlp", "args": {"hidden": [8]}, "epochs": 1}},
            {"convert": {"models": ["small"], "quantize": ["fp32"]}},
            {"bench": {"runs": 2, "warmup": 1}},
        ],
        "summary": {"baseline": "small_fp32", "final": "small_fp32"},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _resume(capsys, config, out):
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    skipped = re.findall(r"^\[(\w+)\] unchanged, skipped", printed, re.M)
    reran = dict(re.findall(r"^\[(\w+)\] \w+ \.\.\. \((.*)\)$", printed, re.M))
    return skipped, reran


@pytest.fixture
def trained_run(tmp_path):
    _write_npz(tmp_path / "data.npz", seed=0)
    config = _config(tmp_path, {"model": "mlp", "args": {"hidden": [8]}, "train": {"epochs": 1}})
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    return config, tmp_path / "out"


def test_unchanged_inputs_skip_every_stage(trained_run, capsys):
    config, out = trained_run
    assert _resume(capsys, config, out) == (["teacher", "small", "convert", "bench"], {})


def test_replaced_data_of_the_same_shape_reruns_everything_and_says_why(trained_run, capsys):
    config, out = trained_run
    before = json.loads((out / "report.json").read_text())
    _write_npz(config.parent / "data.npz", seed=1)
    skipped, reran = _resume(capsys, config, out)
    assert skipped == [] and list(reran) == ["teacher", "small", "convert", "bench"]
    assert all(reason.startswith("data changed") for reason in reran.values())
    after = json.loads((out / "report.json").read_text())
    assert after["dataset"] == before["dataset"]  # same description: only the bytes tell the runs apart
    assert _resume(capsys, config, out)[1] == {}  # and the new state is remembered


def test_a_hand_replaced_upstream_model_reruns_the_stages_after_it(trained_run, capsys):
    config, out = trained_run
    save_model(build("mlp", (12, 12, 1), 3, hidden=(4,)), out / "models" / "small.keras")
    skipped, reran = _resume(capsys, config, out)
    assert skipped == ["teacher", "small"]
    assert reran == {"convert": "models/small.keras changed",
                     "bench": "models/small.keras changed, tflite_models/small_fp32.tflite changed"}


def test_a_new_kerascomp_version_reruns_everything(trained_run, capsys, monkeypatch):
    config, out = trained_run
    monkeypatch.setattr(fingerprint, "__version__", "99.0")
    skipped, reran = _resume(capsys, config, out)
    assert skipped == [] and reran["teacher"].startswith("kerascomp ") and "-> 99.0" in reran["teacher"]


def test_a_replaced_teacher_file_reruns_the_load_and_everything_after(tmp_path, capsys):
    _write_npz(tmp_path / "data.npz", seed=0)
    teacher = tmp_path / "teacher.keras"
    save_model(build("mlp", (12, 12, 1), 3, hidden=(8,)), teacher)
    config = _config(tmp_path, {"path": str(teacher)})
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert _resume(capsys, config, out)[0] == ["teacher", "small", "convert", "bench"]

    save_model(build("mlp", (12, 12, 1), 3, hidden=(16,)), teacher)
    skipped, reran = _resume(capsys, config, out)
    assert skipped == []
    assert reran["teacher"] == f"{teacher} changed"
    assert reran["small"].startswith("models/teacher.keras changed")  # the teacher's copy in the run differs
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["metrics"]["params"] == build("mlp", (12, 12, 1), 3, hidden=(16,)).count_params()


def test_folder_digest_follows_added_and_resized_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(b"x")
    first = fingerprint.path_digest(tmp_path)
    assert fingerprint.path_digest(tmp_path) == first
    (tmp_path / "a" / "2.png").write_bytes(b"y")
    second = fingerprint.path_digest(tmp_path)
    (tmp_path / "a" / "2.png").write_bytes(b"yy")
    assert len({first, second, fingerprint.path_digest(tmp_path)}) == 3
