"""Past one process on real engines: a sweep as Ray Tune trials, and training with two tf.distribute workers.

Everything stays on 127.0.0.1 and every wait is bounded.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kerascomp.analysis import sweep as sweeping
from kerascomp.training import TrainConfig

BUDGET = TrainConfig(epochs=2, verbose=0)
GRID = {"temperature": (4.0,), "student.width": (2, 8)}


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
def test_ray_sweep_finds_the_local_backends_best_setting_and_resumes(digits, digits_model, tmp_path, local_ray, deadline,
                                                                      capsys):
    _, teacher = digits_model
    local = sweeping.sweep(teacher, digits, GRID, tmp_path / "local" / "sweep.json", train_config=BUDGET)
    with deadline(300):
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

    with deadline(120):  # a finished sweep resumes from its state: no trial runs again
        again = sweeping.sweep(teacher, digits, GRID, tmp_path / "ray" / "sweep.json", train_config=BUDGET,
                               backend="ray", ray={"address": None, "scheduler": "none", "cpus_per_trial": 1,
                                                   "gpus_per_trial": 0})
    assert again["points"] == remote["points"]


def _kill_first_trial(stop: threading.Event, killed: list) -> None:
    """SIGKILL the first Ray trial process a little after it starts (found by the title Ray gives it)."""
    while not stop.is_set() and not killed:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if title.startswith("ray::") and ("ImplicitFunc" in title or "_trial" in title):
                time.sleep(3)  # into its training
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(title)
                return
        time.sleep(0.2)


@pytest.mark.slow  # a minute of Ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's trial processes in /proc")
def test_a_killed_ray_trial_starts_over_and_the_table_equals_an_undisturbed_sweep(digits, digits_model, tmp_path,
                                                                                   local_ray, deadline):
    _, teacher = digits_model
    grid = {"temperature": (4.0,), "student.width": (4,)}
    local = sweeping.sweep(teacher, digits, grid, tmp_path / "local" / "sweep.json", train_config=BUDGET,
                           compare_scratch=False)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_trial, args=(stop, killed), daemon=True)
    killer.start()
    try:
        with deadline(300):
            remote = sweeping.sweep(teacher, digits, grid, tmp_path / "ray" / "sweep.json", train_config=BUDGET,
                                    compare_scratch=False, backend="ray",
                                    ray={"address": None, "scheduler": "none", "cpus_per_trial": 1,
                                         "gpus_per_trial": 0, "retries": 1})
    finally:
        stop.set()
        killer.join()
    assert killed, "no trial process was found to kill"
    assert [p["student_accuracy"] for p in remote["points"]] == [p["student_accuracy"] for p in local["points"]]


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


def _workers(tmp_path, epochs: int) -> list[subprocess.Popen]:
    """Two ``kerascomp train --strategy multiworker`` processes on this machine, each told the cluster by TF_CONFIG."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "kerascomp", "train", "--model", "mlp", "--epochs", str(epochs),
             "--strategy", "multiworker", "--out", str(tmp_path / f"worker{index}.keras")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return workers


def test_a_killed_multiworker_peer_ends_the_survivor_with_one_line_not_a_hang(tmp_path):
    """Before, the survivor's Error line was TensorFlow's op dump ("unexpected UnavailableError: {{function_node"),
    1.3 s after the chief was killed (11 s after the other worker was)."""
    chief, survivor = _workers(tmp_path, epochs=500)
    try:
        for line in survivor.stdout:
            if line.startswith("epoch   2/"):  # both are training together
                chief.kill()
                break
        output = survivor.communicate(timeout=60)[0]
    finally:
        for worker in (chief, survivor):
            worker.kill()
            worker.wait()
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert survivor.returncode == 1 and errors == [
        "Error: a multiworker peer stopped (/job:worker/replica:0/task:0); this worker stops too: start every "
        "worker of TF_CONFIG again to train"]
    assert not (tmp_path / "worker1.keras").exists()


def test_two_multiworker_processes_finish_with_identical_weights(tmp_path, digits):
    from kerascomp.saving import load_model

    workers = _workers(tmp_path, epochs=2)
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
