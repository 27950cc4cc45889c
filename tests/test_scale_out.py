"""Past one process on real engines: a sweep as Ray Tune trials, and training with two tf.distribute workers.

Everything stays on 127.0.0.1 and every wait is bounded.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from kerascomp.analysis import sweep as sweeping
from kerascomp.training import TrainConfig

BUDGET = TrainConfig(epochs=2, verbose=0)
GRID = {"temperature": (4.0,), "student.width": (2, 8)}


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail the test instead of hanging CI when a cluster never forms."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow  # 40 s of Ray start-up; the local backend's sweep runs in the quick suite (test_sweep.py)
def test_ray_sweep_finds_the_local_backends_best_setting_and_resumes(digits, digits_model, tmp_path, local_ray,
                                                                      capsys):
    _, teacher = digits_model
    local = sweeping.sweep(teacher, digits, GRID, tmp_path / "local" / "sweep.json", train_config=BUDGET)
    with _deadline(300):
        remote = sweeping.sweep(teacher, digits, GRID, tmp_path / "ray" / "sweep.json", train_config=BUDGET,
                                backend="ray", ray={"address": None, "scheduler": "none", "cpus_per_trial": 1,
                                                    "gpus_per_trial": 0})

    def best(state):
        return max(state["points"], key=lambda p: p["student_accuracy"])["key"]

    assert best(remote) == best(local) == "student.width=8,temperature=4.0"
    by_key = {p["key"]: p for p in local["points"]}
    for point in remote["points"]:  # same seeds, same data: the same runs, wherever they ran
        assert point["student_accuracy"] == pytest.approx(by_key[point["key"]]["student_accuracy"], abs=0.02)
        assert point["scratch_accuracy"] is not None and point["student_params"] == by_key[point["key"]][
            "student_params"]
    assert set(remote["scratch"]) == set(local["scratch"]) and remote["stopped"] == []
    assert (tmp_path / "ray" / "ray").is_dir()  # Ray Tune's experiment, beside the state

    with _deadline(120):  # a finished sweep resumes from its state: no trial runs again
        again = sweeping.sweep(teacher, digits, GRID, tmp_path / "ray" / "sweep.json", train_config=BUDGET,
                               backend="ray", ray={"address": None, "scheduler": "none", "cpus_per_trial": 1,
                                                   "gpus_per_trial": 0})
    assert again["points"] == remote["points"]


def test_a_trial_holds_tensorflow_to_its_reserved_cpus():
    code = ("from kerascomp.training.distribute import limit_threads; limit_threads(1); "
            "from kerascomp.backend import tf; tf.constant(1.0) + 1.0; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["1", "1"]  # not one thread per core of the node


def test_ray_backend_without_ray_says_what_to_install(digits, digits_model, tmp_path, monkeypatch, capsys):
    from kerascomp.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    source, _ = digits_model
    code = main(["sweep", "--teacher", str(source), "--grid", "temperature=2", "--epochs", "1", "--backend", "ray",
                 "--out", str(tmp_path / "s")])
    assert code == 1 and 'pip install "kerascomp[ray]"' in capsys.readouterr().err


def test_sweep_runs_the_teacher_once_for_every_point(digits, digits_model, tmp_path, monkeypatch):
    from kerascomp.training import distill_data

    _, teacher = digits_model
    from kerascomp.training import distiller

    calls = []
    real = distill_data.cache_outputs

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_data, "cache_outputs", counted)  # where a run would compute its own
    monkeypatch.setattr(distiller, "cache_outputs", counted)  # where the sweep computes the shared one
    sweeping.sweep(teacher, digits, {"temperature": (2.0, 4.0)}, tmp_path / "s.json", train_config=TrainConfig(
        epochs=1, verbose=0), compare_scratch=False)
    assert calls == [1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_multiworker_processes_finish_with_identical_weights(tmp_path, digits):
    from kerascomp.saving import load_model

    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "kerascomp", "train", "--model", "mlp", "--epochs", "2",
             "--strategy", "multiworker", "--out", str(tmp_path / f"worker{index}.keras")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    first, second = (load_model(tmp_path / f"worker{index}.keras") for index in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))
    accuracy = (first.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean()
    assert accuracy > 0.8  # they trained together, not merely started from the same seed
