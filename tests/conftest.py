"""Shared fixtures. Two logical CPU devices are configured before TensorFlow starts,
so tests can run ``MirroredStrategy`` on a CPU-only machine."""

import numpy as np
import pytest

from kerascomp._compat import tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


@pytest.fixture(scope="session")
def digits():
    from kerascomp.data import load_data

    return load_data("digits")


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
    return path, model
