"""Shared fixtures. Two logical CPU devices are configured before TensorFlow starts,
so tests can run ``MirroredStrategy`` on a CPU-only machine.

The suite runs in random order (pytest-randomly; rerun an order with
``-p randomly --randomly-seed=N``), so every test starts from the same global
state: TensorFlow's and tf_keras' random seeds are reset before each test, and
a test that leaves the session fixtures, the mixed-precision policy or the
working directory changed fails instead of breaking whichever test runs next.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from kerascomp.backend import keras, tf

# fuzzing (tests/test_fuzz.py): a fixed-seed quick profile by default, KERASCOMP_FUZZ=long for many more cases
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("quick", max_examples=30, derandomize=True, **_FUZZ)
settings.register_profile("long", max_examples=1000, **_FUZZ)
settings.load_profile(os.environ.get("KERASCOMP_FUZZ", "quick"))

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


def pytest_terminal_summary(terminalreporter, config):
    """Repeat the order's seed at the end (the header has it too, except under -q)."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int) and config.pluginmanager.has_plugin("randomly"):
        terminalreporter.write_line(f"Using --randomly-seed={seed} (rerun this order with -p randomly --randomly-seed={seed})")


_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_SHARED = {}  # what the session fixtures looked like when built


@pytest.fixture(scope="session")
def digits():
    """Shared by every test: its arrays are read-only, so a test cannot change them for the others."""
    from kerascomp.data import load_data

    data = load_data("digits")
    for name in _SPLITS:
        getattr(data, name).setflags(write=False)
    _SHARED["digits"] = {name: getattr(data, name) for name in _SPLITS}
    return data


@pytest.fixture
def image_npz(tmp_path):
    """A small uint8 image dataset (N, 12, 12) with 3 classes and its own test split."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 60, size=(n, 12, 12), dtype=np.uint8)
        x[y == 1, :6] += 150  # each class has a visible pattern
        x[y == 2, :, :6] += 150
        return x, y

    x_train, y_train = images(90)
    x_test, y_test = images(30)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             classes=np.array(["plain", "top", "left"]))
    return path


@pytest.fixture(scope="session")
def digits_model(digits, tmp_path_factory):
    """A small CNN trained on digits and saved with its sidecar: ``(path, model)``."""
    from kerascomp.saving import save_model
    from kerascomp.training import TrainConfig, train

    model, _ = train("cnn", digits, TrainConfig(epochs=12, verbose=0), model_args={"width": 8})
    path = save_model(model, tmp_path_factory.mktemp("models") / "cnn.keras", meta={"data": digits.describe()})
    _SHARED["digits_model"] = _model_state(path, model)
    return path, model


def _model_state(path, model):
    return {"weights": [w.copy() for w in model.get_weights()],
            "trainable": [layer.trainable for layer in [model, *model.layers]],
            "files": {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.is_file()}}


def _restore_model(path, model, state):
    model.set_weights(state["weights"])
    for layer, trainable in zip([model, *model.layers], state["trainable"]):
        layer.trainable = trainable
    for p in path.parent.iterdir():
        if p.is_file() and p.name not in state["files"]:
            p.unlink()
    for name, content in state["files"].items():
        (path.parent / name).write_bytes(content)


@pytest.fixture(autouse=True)
def _isolated_global_state(request):
    """Same random state before each test; after it, the shared state must be as the test found it."""
    keras.utils.set_random_seed(0)  # TF's global seed and tf_keras' initializer seeds; pytest-randomly reseeds random/numpy
    cwd, policy = os.getcwd(), keras.mixed_precision.global_policy().name
    yield
    problems = []
    if os.getcwd() != cwd:
        problems.append(f"left the working directory at {os.getcwd()}")
        os.chdir(cwd)
    if keras.mixed_precision.global_policy().name != policy:
        problems.append(f"left the mixed-precision policy at {keras.mixed_precision.global_policy().name}")
        keras.mixed_precision.set_global_policy(policy)
    if "digits" in request.fixturenames and "digits" in _SHARED:
        data = request.getfixturevalue("digits")
        if any(getattr(data, name) is not array for name, array in _SHARED["digits"].items()):
            problems.append("replaced arrays of the session fixture 'digits'")
            for name, array in _SHARED["digits"].items():
                setattr(data, name, array)
    if "digits_model" in request.fixturenames and "digits_model" in _SHARED:
        path, model = request.getfixturevalue("digits_model")
        before, after = _SHARED["digits_model"], _model_state(path, model)
        changed = [what for what, same in (
            ("weights", all(np.array_equal(a, b) for a, b in zip(before["weights"], after["weights"]))),
            ("trainable flags", before["trainable"] == after["trainable"]),
            ("saved files", before["files"] == after["files"]),
        ) if not same]
        if changed:
            problems.append(f"changed the {', '.join(changed)} of the session fixture 'digits_model'")
            _restore_model(path, model, before)
    # restored above, so only the test that changed something fails, not the ones after it
    assert not problems, "this test " + "; ".join(problems) + " (other tests share it)"


@pytest.fixture
def small_pipeline(tmp_path, capsys):
    """``run(data, max_drop, teacher, prune)``: a pipeline of a teacher and one prune, their fp32 and int8 files
    benched (each argument a YAML flow mapping); returns ``report.json``, what it printed and its folder."""
    from kerascomp.cli import main  # the CLI's imports are the test's, not every test's

    def run(data: str, max_drop: float, teacher: str, prune: str):
        config = tmp_path / "small.yaml"
        config.write_text(f"data: {data}\nbudget: {{max_drop: {max_drop}}}\nteacher: {teacher}\nstages:\n"
                          f"  - prune: {prune}\n"
                          "  - convert: {name: convert_teacher, models: [teacher], quantize: [fp32]}\n"
                          "  - convert: {models: [prune], quantize: [int8]}\n  - bench: {runs: 3}\n")
        out = tmp_path / "run"
        assert main(["run", str(config), "--out", str(out)]) == 0
        return json.loads((out / "report.json").read_text()), capsys.readouterr().out, out

    return run


@pytest.fixture(scope="session")
def fuzz_tflite(tmp_path_factory) -> bytes:
    """The bytes of a small int8 ``.tflite`` with two outputs (their names in its signature), to mutate."""
    from kerascomp.data import load_data
    from kerascomp.export import export
    from kerascomp.models import build

    data = load_data("digits-multi")
    path = tmp_path_factory.mktemp("fuzz") / "two.tflite"
    export(build("mlp", data.input_shape, data.num_outputs, hidden=(8,)), path, quantize="int8", data=data,
           min_agreement=0.0)
    return path.read_bytes()


@pytest.fixture(scope="session")
def fuzz_keras(tmp_path_factory) -> bytes:
    """The bytes of a small tf_keras ``.keras`` (a CNN: convolution, pooling, dense), to mutate."""
    from kerascomp.models import build
    from kerascomp.saving import save_model

    path = tmp_path_factory.mktemp("fuzz") / "small.keras"
    return save_model(build("cnn", (8, 8, 1), 4, width=2), path).read_bytes()


@pytest.fixture
def deadline():
    """``with deadline(seconds):`` fails the test instead of hanging CI (a cluster that never forms, a loader
    that loops for ever)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def within(seconds: int):
        def expire(*_):
            raise TimeoutError(f"still running after {seconds} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return within
