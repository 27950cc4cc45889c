import numpy as np
import pytest

from kerascomp.backend import keras, tf
from kerascomp.errors import ConfigError
from kerascomp.training import TrainConfig, evaluate, train

FAST = dict(epochs=5, batch_size=64, verbose=0)


def test_mlp_learns_digits_and_reports_metrics(digits):
    model, metrics = train("mlp", digits, TrainConfig(**FAST), model_args={"hidden": (64,)})
    assert metrics["test_accuracy"] > 0.85
    assert metrics["params"] == model.count_params() == 64 * 64 + 64 + 64 * 10 + 10
    assert metrics["epochs"] == 5 and len(metrics["epoch_seconds"]) == 5
    assert metrics["seconds_per_epoch"] > 0
    assert len(metrics["history"]["val_loss"]) == 5


def test_best_validation_epoch_weights_are_restored(digits):
    config = TrainConfig(epochs=6, learning_rate=0.05, patience=2, verbose=0)  # a high rate makes val loss wander
    model, metrics = train("mlp", digits, config, model_args={"hidden": (32,)})
    best = min(metrics["history"]["val_loss"])
    assert evaluate(model, digits)["val_loss"] == pytest.approx(best, rel=1e-4)
    assert metrics["best_epoch"] == int(np.argmin(metrics["history"]["val_loss"])) + 1


def test_same_seed_gives_same_model(digits):
    config = TrainConfig(epochs=1, verbose=0)
    a, _ = train("mlp", digits, config, model_args={"hidden": (16,)})
    b, _ = train("mlp", digits, config, model_args={"hidden": (16,)})
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def _gpus() -> int:
    """Local GPUs as TensorFlow sees them (conftest splits only the CPU, into two logical devices)."""
    return len(tf.config.list_logical_devices("GPU"))


def test_mirrored_strategy_trains_on_every_gpu_else_on_two_logical_cpus(digits):
    replicas = []

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            replicas.append(self.model.distribute_strategy.num_replicas_in_sync)

    _, metrics = train("cnn", digits, TrainConfig(epochs=2, strategy="mirrored", verbose=0),
                       model_args={"width": 8}, callbacks=[Probe()])
    # one replica per local GPU when there are any; otherwise the two logical CPUs of conftest
    assert replicas == [_gpus() or 2]
    assert metrics["test_accuracy"] > 0.5


def test_mixed_precision_trains_and_returns_a_float32_model(digits):
    model, metrics = train("mlp", digits, TrainConfig(mixed_precision=True, **FAST), model_args={"hidden": (64,)})
    assert metrics["precision_policy"] == ("mixed_float16" if _gpus() else "mixed_bfloat16")
    assert all(layer.dtype_policy.name == "float32" for layer in model.layers)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert metrics["test_accuracy"] > 0.8


def test_a_built_model_is_trained_in_place(digits):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    before = [w.copy() for w in model.get_weights()]
    trained, _ = train(model, digits, TrainConfig(epochs=1, verbose=0))
    assert trained is model
    assert not np.array_equal(before[0], model.get_weights()[0])


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(batch_size=0), dict(learning_rate=0.0),
                                    dict(patience=-1), dict(strategy="tpu")])
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_augmentation_changes_what_the_model_sees_and_mixup_trains_on_soft_labels(digits):
    budget = dict(epochs=2, verbose=0, seed=3)
    plain, _ = train("cnn", digits, TrainConfig(**budget), model_args={"width": 4})
    shifted, metrics = train("cnn", digits, TrainConfig(**budget, augment="shift, none"), model_args={"width": 4})
    assert metrics["config"]["augment"] == "shift"
    assert not all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), shifted.get_weights()))
    _, mixed = train("cnn", digits, TrainConfig(**budget, augment="shift,mixup"), model_args={"width": 4})
    assert 0.0 <= mixed["val_accuracy"] <= 1.0 and len(mixed["history"]["val_accuracy"]) == 2
    with pytest.raises(ConfigError, match="unknown augmentation"):
        TrainConfig(augment="jitter")


def test_training_says_one_short_line_per_epoch_to_the_console(digits):
    """In place of Keras's progress bar (a fragment per batch, lines of 246 columns when distilling): one line per
    epoch, at most 100 columns, through kerascomp's echo, and nothing when verbose is 0."""
    from kerascomp.console import set_echo

    lines = []
    previous = set_echo(lines.append)
    try:
        teacher, _ = train("mlp", digits, TrainConfig(epochs=2, verbose=0))
        assert lines == []
        train("mlp", digits, TrainConfig(epochs=2, verbose=1), teacher=teacher)
    finally:
        set_echo(previous)
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert all(len(line) <= 100 and "val_accuracy" in line for line in lines)
