"""Distiller loss, frozen teacher, tf.distribute, teacher cache, hints, pruning callbacks, augmentation."""

import numpy as np
import pytest

from kerascomp.backend import keras, tf
from kerascomp.errors import ConfigError, ModelError
from kerascomp.models import build
from kerascomp.training import TrainConfig, train
from kerascomp.training.distill_data import datasets
from kerascomp.training.distillation import DistillConfig
from kerascomp.training.distiller import Distiller, distillation_losses

FAST = dict(epochs=2, batch_size=64, verbose=0)


def _dense(seed: int, hidden: int = 16) -> keras.Model:
    """A BN- and dropout-free model, so single-device and mirrored runs must agree exactly."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_losses_equal_hand_computed_values():
    s = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], np.float32)
    t = np.array([[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]], np.float32)
    y = np.array([0, 2])
    ce, kd = distillation_losses(tf.constant(y), tf.constant(s), tf.constant(t), temperature=2.0)
    hand_ce = -np.log(_softmax(s)[[0, 1], y])
    p_t, p_s = _softmax(t / 2), _softmax(s / 2)
    hand_kd = 4.0 * (p_t * np.log(p_t / p_s)).sum(axis=1)
    np.testing.assert_allclose(ce.numpy(), hand_ce, rtol=1e-5)
    np.testing.assert_allclose(kd.numpy(), hand_kd, rtol=1e-5)
    assert kd.numpy().min() > 0  # different distributions: KL strictly positive


def test_distiller_reports_weighted_sum_of_parts(digits):
    distiller = Distiller(_dense(1), _dense(2), temperature=3.0, alpha=0.25)
    distiller.compile()
    x, y = digits.x_val[:40], digits.y_val[:40]
    result = distiller.evaluate(x, y, batch_size=40, verbose=0, return_dict=True)
    ce, kd = distillation_losses(tf.constant(y), distiller.student(x), distiller.teacher(x), 3.0)
    assert result["loss"] == pytest.approx(0.25 * ce.numpy().mean() + 0.75 * kd.numpy().mean(), rel=1e-5)
    assert result["ce_loss"] == pytest.approx(ce.numpy().mean(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((distiller.student(x).numpy().argmax(1) == y).mean())


def test_training_changes_student_but_never_the_teacher(digits, digits_model):
    """Uncached teacher, with a hint: the teacher is untouched, the student and its hint projection learn."""
    _, teacher = digits_model
    before = [w.copy() for w in teacher.get_weights()]
    config = DistillConfig(teacher_cache=False, hints=[("block_1_relu2", "block_1_relu2")])
    student, metrics = train("cnn", digits, TrainConfig(**{**FAST, "epochs": 3}), model_args={"width": 4},
                             teacher=teacher, distill=config)
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
    assert teacher.trainable  # the caller's flag is left alone; the optimizer never sees the teacher
    assert student.count_params() == metrics["params"] == build("cnn", (8, 8, 1), 10, width=4).count_params()
    assert not any(layer.name.startswith("hint_") for layer in student.layers)  # a plain student, no projection
    history = metrics["history"]
    assert {"loss", "ce_loss", "kd_loss", "hint_loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    assert history["loss"][-1] < history["loss"][0] and history["hint_loss"][-1] < history["hint_loss"][0]
    assert metrics["distill"]["teacher_cache"] is False and metrics["teacher_params"] == teacher.count_params()


def test_cached_and_uncached_teacher_give_the_same_loss(digits, digits_model):
    _, teacher = digits_model
    distiller = Distiller(build("cnn", (8, 8, 1), 10, width=4), teacher)
    distiller.compile()
    x, y = tf.constant(digits.x_val[:64]), tf.constant(digits.y_val[:64])
    uncached = distiller.test_step((x, y))["loss"].numpy()
    for metric in distiller.metrics:
        metric.reset_state()
    _, cached_val, seconds = datasets(distiller.teacher_features, digits, DistillConfig(teacher_cache=True), 64, 0)
    assert len(cached_val.element_spec) == 3 and seconds > 0
    batch = next(iter(cached_val))
    np.testing.assert_allclose(batch[2][0].numpy(), teacher(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    assert distiller.test_step(batch)["loss"].numpy() == pytest.approx(uncached, rel=1e-5)


def test_mirrored_strategy_matches_one_device(digits):
    """Same data, same start: per-global-batch reduction makes two replicas step exactly like one."""
    def one_epoch(strategy):
        with strategy.scope():
            distiller = Distiller(_dense(1), _dense(2), temperature=2.0, alpha=0.5)
            distiller.compile(optimizer=keras.optimizers.SGD(0.5))
        ds = tf.data.Dataset.from_tensor_slices((digits.x_train[:128], digits.y_train[:128])).batch(64)
        history = distiller.fit(ds, epochs=2, verbose=0)
        return distiller.student.get_weights(), history.history["loss"]

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) == 2
    single, single_loss = one_epoch(tf.distribute.get_strategy())
    mirrored, mirrored_loss = one_epoch(tf.distribute.MirroredStrategy(devices))
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_train_distils_under_mirrored_strategy(digits, digits_model):
    _, teacher = digits_model
    config = TrainConfig(**{**FAST, "epochs": 1}, strategy="mirrored")
    student, metrics = train("cnn", digits, config, model_args={"width": 4}, teacher=teacher)
    assert metrics["distill"]["teacher_cache"] is True and np.isfinite(metrics["history"]["kd_loss"]).all()
    assert student.predict(digits.x_test[:4], verbose=0).shape == (4, 10)


def test_pruning_callback_finds_the_wrapped_student(digits, digits_model):
    """tfmot's UpdatePruningStep collects PruneLowMagnitude layers recursively through distiller.layers."""
    import tensorflow_model_optimization as tfmot

    _, teacher = digits_model
    keras.utils.set_random_seed(0)
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    student = tfmot.sparsity.keras.prune_low_magnitude(build("cnn", (8, 8, 1), 10, width=4), pruning_schedule=schedule)
    pruned, _ = train(student, digits, TrainConfig(**{**FAST, "epochs": 1}), teacher=teacher,
                      callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    kernel = tfmot.sparsity.keras.strip_pruning(pruned).get_layer("block_1_conv2").kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("hint, message", [
    (("nope", "block_0_conv1"), "teacher has no layer 'nope'"),
    (("block_0_conv1", "nope"), "student has no layer 'nope'"),
    (("block_0_conv1", "block_1_conv1"), "must match in every axis but channels"),
])
def test_bad_hint_is_a_config_error_naming_it(digits_model, hint, message):
    _, teacher = digits_model
    with pytest.raises(ConfigError, match=message):
        Distiller(build("cnn", (8, 8, 1), 10, width=4), teacher, hints=[hint])


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, "temperature must be positive"),
    ({"temperature": -1.0}, "temperature must be positive"),
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
    ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
    ({"augment": "sparkle"}, "unknown augmentation"),
    ({"augment": "shift", "teacher_cache": True}, "teacher_cache needs augment='none'"),
    ({"hints": ["a-b"]}, "teacher_layer:student_layer"),
])
def test_bad_config_values_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(**kwargs)


def test_mismatched_teacher_and_student_are_rejected(digits_model):
    _, teacher = digits_model
    with pytest.raises(ModelError, match="output units .classes or targets. differ"):
        Distiller(build("cnn", (8, 8, 1), 3, width=4), teacher)
    with pytest.raises(ModelError, match="input shapes differ"):
        Distiller(build("cnn", (12, 12, 1), 10, width=4), teacher)


def _run(capsys, *args):
    from kerascomp.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_distill_compare_scratch_writes_model_json_and_plots(capsys, tmp_path, digits, digits_model):
    import json

    from kerascomp.saving import load_meta, load_model

    teacher_path, _ = digits_model
    out, report, plots = tmp_path / "s.keras", tmp_path / "s.json", tmp_path / "plots"
    code, stdout, err = _run(capsys, "distill", "--teacher", str(teacher_path), "--student", "cnn",
                             "--student-arg", "width=4", "--epochs", "1", "--temperature", "2", "--alpha", "0.5",
                             "--compare-scratch", "--out", str(out), "--json", str(report), "--plots", str(plots))
    assert code == 0, err
    metrics = json.loads(report.read_text())
    for key in ("teacher_accuracy", "student_accuracy", "scratch_accuracy", "gap_closed", "teacher_params",
                "student_params", "student_seconds_per_epoch", "scratch_seconds_per_epoch"):
        assert key in metrics, key
    assert metrics["student_params"] == build("cnn", (8, 8, 1), 10, width=4).count_params()
    assert metrics["student"]["distill"]["temperature"] == 2.0 and len(metrics["scratch"]["history"]["loss"]) == 1
    gap = (metrics["student_accuracy"] - metrics["scratch_accuracy"]) / (metrics["teacher_accuracy"] - metrics["scratch_accuracy"])
    assert metrics["gap_closed"] == pytest.approx(gap)
    student = load_model(out)
    assert (student.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean() == pytest.approx(metrics["student_accuracy"])
    meta = load_meta(out)
    assert meta["compression"][-1]["stage"] == "distill" and meta["compression"][-1]["source"] == str(teacher_path)
    assert meta["model"] == {"name": "cnn", "args": {"width": 4}}  # the student's architecture, not the teacher's
    assert sorted(p.name for p in plots.iterdir()) == ["confusion.png", "epoch_times.png", "training_curves.png"]
    assert "gap closed" in stdout


@pytest.mark.parametrize("args, message", [
    (["--temperature", "0"], "temperature must be positive"),
    (["--alpha", "1.5"], "alpha must be in"),
    (["--student-arg", "width=4", "--data", "IMAGES"], "has inputs (12, 12, 1) but"),
    (["--student-arg", "wdith=4"], "unknown argument"),
    (["--hint", "nope:block_0_conv1"], "teacher has no layer 'nope'"),
])
def test_cli_distill_bad_input_is_one_error_line_and_writes_nothing(capsys, tmp_path, digits_model, image_npz, args, message):
    teacher_path, _ = digits_model
    args = [str(image_npz) if a == "IMAGES" else a for a in args]
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, "distill", "--teacher", str(teacher_path), "--student", "cnn", "--epochs", "1",
                        *args, "--out", str(out_dir / "s.keras"), "--json", str(out_dir / "s.json"))
    assert code == 1
    assert err.startswith("Error:") and message in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_cli_distill_rejects_a_teacher_with_other_classes(capsys, tmp_path, image_npz):
    from kerascomp.saving import save_model

    teacher = save_model(build("cnn", (8, 8, 1), 3, width=4), tmp_path / "t.keras")
    code, _, err = _run(capsys, "distill", "--teacher", str(teacher), "--student", "cnn", "--data", "digits",
                        "--out", str(tmp_path / "s.keras"))
    assert code == 1 and err.startswith("Error:") and "has 10 classes but" in err and "outputs 3" in err
    assert not (tmp_path / "s.keras").exists()


def test_teacher_and_student_see_the_same_augmented_batch(digits):
    """A teacher identical to the student has zero KL on augmented (even mixed) batches only if both get one tensor."""
    distiller = Distiller(_dense(3), _dense(3), temperature=2.0, alpha=0.0)
    distiller.compile()
    train_ds, _, _ = datasets(distiller.teacher_features, digits, DistillConfig(augment="rotation,mixup"), 64, 0)
    plain_ds, _, _ = datasets(distiller.teacher_features, digits, DistillConfig(augment="none", teacher_cache=False),
                              64, 0)  # the same shuffle seed: the same examples in the same order, not augmented
    (x, y), (x_plain, y_plain) = ([t.numpy() for t in b] for b in (next(iter(train_ds)), next(iter(plain_ds))))
    assert y_plain.shape == (64,)
    assert y.shape == (64, 10) and np.allclose(y.sum(axis=1), 1.0)
    assert (y.max(axis=1) < 0.99).any()  # MixUp made soft labels: not every row is one-hot
    assert (y[np.arange(64), y_plain] > 0).all()  # ... and each row still holds its own example's label
    changed = ~np.isclose(x, x_plain, atol=1e-6).reshape(64, -1).all(axis=1)
    assert changed.mean() > 0.5  # most examples' pixels were rotated and mixed (all 64 with seed 0)
    result = distiller.evaluate(train_ds.take(3), verbose=0, return_dict=True)
    assert result["kd_loss"] == pytest.approx(0.0, abs=1e-6) and result["ce_loss"] > 0


def test_augmented_distillation_trains_without_cache(digits, digits_model):
    _, teacher = digits_model
    _, metrics = train("cnn", digits, TrainConfig(**{**FAST, "epochs": 1}), model_args={"width": 4}, teacher=teacher,
                       distill=DistillConfig(augment="randaugment,cutmix"))  # randaugment on 1-channel images too
    assert metrics["distill"]["teacher_cache"] is False and metrics["teacher_cache_seconds"] == 0
    assert np.isfinite(metrics["history"]["loss"]).all()


def test_keras_cv_is_imported_only_when_augmenting():
    import subprocess
    import sys

    code = "import sys, kerascomp.compress.distill, kerascomp.training; print('keras_cv' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr[-500:]
