"""Distillation sweep: grid expansion, scratch runs shared per size, resume, outputs, bad grids."""

import json

import pytest

from kerascomp.analysis import sweep as sweeping
from kerascomp.errors import ConfigError, ModelError
from kerascomp.training import TrainConfig
from kerascomp.training.distillation import DistillConfig

FAST = TrainConfig(epochs=1, verbose=0)


def test_sweep_runs_grid_shares_scratch_and_resumes(digits, digits_model, tmp_path, monkeypatch):
    _, teacher = digits_model
    state_path = tmp_path / "sweep.json"
    grid = {"temperature": (1.0, 4.0), "student.width": (2, 4)}
    calls = []
    real_train = sweeping.train
    monkeypatch.setattr(sweeping, "train", lambda *a, **k: calls.append(k.get("teacher") is not None) or real_train(*a, **k))

    state = sweeping.sweep(teacher, digits, grid, state_path, train_config=FAST)
    assert calls.count(True) == 4 and calls.count(False) == 2  # one scratch run per student size
    assert sorted(p["key"] for p in state["points"]) == [
        "student.width=2,temperature=1.0", "student.width=2,temperature=4.0",
        "student.width=4,temperature=1.0", "student.width=4,temperature=4.0"]
    assert {p["student_params"] for p in state["points"]} == {368, 1230}
    assert json.loads(state_path.read_text())["points"] == state["points"]

    calls.clear()
    with pytest.raises(ConfigError, match="different"):  # another base config must not mix with these results
        sweeping.sweep(teacher, digits, {"temperature": (1.0,)}, state_path, train_config=TrainConfig(epochs=2, verbose=0))
    again = sweeping.sweep(teacher, digits, {"temperature": (1.0, 4.0, 8.0), "student.width": (2, 4)}, state_path,
                           train_config=FAST)
    assert calls == [True, True]  # only the two new points; scratch results are reused
    assert len(again["points"]) == 6 and again["grid"]["temperature"] == [1.0, 4.0, 8.0]

    table = sweeping.sweep_table(again)
    rows = table.splitlines()[4:]
    assert len(rows) == 6 and "gap closed" in table
    assert rows[0].count("|") == rows[-1].count("|") == 8


def test_sweep_validates_every_point_before_training(digits, digits_model, tmp_path):
    _, teacher = digits_model
    with pytest.raises(ConfigError, match="unknown grid key 'beta'"):
        sweeping.sweep(teacher, digits, {"beta": (1,)}, tmp_path / "s.json", train_config=FAST)
    with pytest.raises(ConfigError, match="temperature must be positive"):
        sweeping.sweep(teacher, digits, {"temperature": (2, 0)}, tmp_path / "s.json", train_config=FAST)
    with pytest.raises(ModelError, match="unknown argument"):
        sweeping.sweep(teacher, digits, {"student.wdith": (2,)}, tmp_path / "s.json", train_config=FAST)
    assert not (tmp_path / "s.json").exists()


def test_cli_sweep_writes_table_json_and_plot_and_resumes(capsys, tmp_path, digits_model):
    from kerascomp.cli import main

    teacher_path, _ = digits_model
    args = ["sweep", "--teacher", str(teacher_path), "--grid", "alpha=0.1,0.9", "--grid", "student.width=2",
            "--epochs", "1", "--out", str(tmp_path / "sw")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "[1/2]" in first and "[2/2]" in first
    assert {p.name for p in (tmp_path / "sw").iterdir()} == {"sweep.json", "sweep.md", "sweep.png"}
    assert main(args) == 0
    assert "[1/2]" not in capsys.readouterr().out  # finished points are not re-run
    state = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [p["alpha"] for p in state["points"]] == [0.1, 0.9] and state["grid"]["student.width"] == [2]


def test_cli_sweep_bad_grid_is_an_error_line(capsys, tmp_path, digits_model):
    from kerascomp.cli import main

    teacher_path, _ = digits_model
    code = main(["sweep", "--teacher", str(teacher_path), "--grid", "alpha=0.5,2", "--out", str(tmp_path / "sw")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error:") and "alpha must be in" in err
    assert not (tmp_path / "sw").exists()


def test_num_samples_are_seeds_of_their_own():
    assert sweeping.with_samples({"alpha": (0.5,)}, 3, seed=7) == {"alpha": (0.5,), "seed": (7, 8, 9)}
    assert sweeping.with_samples({"seed": (1, 2)}, 1, seed=0) == {"seed": (1, 2)}
    with pytest.raises(ConfigError, match="drop the 'seed' grid key"):
        sweeping.with_samples({"seed": (1, 2)}, 2, seed=0)
    with pytest.raises(ConfigError, match="at least 1"):
        sweeping.with_samples({}, 0, seed=0)


def test_distill_config_in_sweep_keeps_base_settings():
    point, args, config = sweeping._point({"alpha": 0.9, "student.width": 4}, "cnn", {"depth": 1},
                                          DistillConfig(temperature=2.0))
    assert args == {"depth": 1, "width": 4} and (config.temperature, config.alpha) == (2.0, 0.9)


def test_seed_is_a_grid_key_that_repeats_every_run_and_its_scratch_twin(digits, digits_model, tmp_path, monkeypatch):
    _, teacher = digits_model
    seen = []
    real_train = sweeping.train
    monkeypatch.setattr(sweeping, "train", lambda student, data, config, **k: seen.append(
        (config.seed, k.get("teacher") is not None)) or real_train(student, data, config, **k))
    grid = sweeping.with_samples({"student.width": (2,)}, 2, seed=0)  # the CLI's --num-samples 2
    assert grid == {"student.width": (2,), "seed": (0, 1)}
    state = sweeping.sweep(teacher, digits, grid, tmp_path / "s.json", train_config=FAST)
    assert sorted(seen) == [(0, False), (0, True), (1, False), (1, True)]
    assert sorted(state["scratch"]) == ["seed=0,width=2", "seed=1,width=2"]
    assert sorted(p["key"] for p in state["points"]) == ["seed=0,student.width=2", "seed=1,student.width=2"]


def test_a_stopped_sweep_keeps_its_finished_points_and_says_the_same_call_goes_on(digits, digits_model, tmp_path,
                                                                                     monkeypatch):
    from kerascomp.errors import Interrupted

    _, teacher = digits_model
    state_path, grid = tmp_path / "sweep.json", {"temperature": (1.0, 4.0)}
    calls, real_train = [], sweeping.train

    def stopped_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C (or the CLI's SIGTERM) lands in the second run
        return real_train(*args, **kwargs)

    monkeypatch.setattr(sweeping, "train", stopped_at_the_second)
    with pytest.raises(Interrupted, match=f"sweep stopped: 1 of 2 points finished, kept in {state_path}; the same"):
        sweeping.sweep(teacher, digits, grid, state_path, train_config=FAST, compare_scratch=False)
    assert [p["key"] for p in json.loads(state_path.read_text())["points"]] == ["temperature=1.0"]
    state = sweeping.sweep(teacher, digits, grid, state_path, train_config=FAST, compare_scratch=False)
    assert len(calls) == 3 and [p["key"] for p in state["points"]] == ["temperature=1.0", "temperature=4.0"]
