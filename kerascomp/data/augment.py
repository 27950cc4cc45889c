"""Image augmentation on tensors inside tf.data, with keras-cv layers used as plain functions.

The augmented batch is produced *before* the training step, so a distiller's
teacher and student receive the identical tensor (consistent teaching). This
module imports nothing heavy at load time: keras-cv (and Keras 3 under it) is
imported on the first call to :func:`augmenter`, so no other stage pays for it.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

from kerascomp.backend import import_keras3, tf
from kerascomp.errors import ConfigError

__all__ = ["AUGMENTATIONS", "parse_augment", "augmenter", "augmented", "mixes_labels"]

AUGMENTATIONS = {
    "flip": "random horizontal flip (not for digits or text)",
    "crop": "random crop of 64-100% of the area, resized back",
    "shift": "random translation by up to 1/8 of the height and width",
    "rotation": "random rotation by up to about 15 degrees",
    "randaugment": "RandAugment, 2 ops per image at magnitude 0.3",
    "mixup": "MixUp (labels become soft)",
    "cutmix": "CutMix (labels become soft)",
}
_MIXING = ("mixup", "cutmix")


def parse_augment(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``'shift,mixup'`` -> ``('shift', 'mixup')``; ``none``/empty -> ``()``; unknown names are a ConfigError."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or ())
    names = tuple(n.strip().lower() for n in names if n.strip() and n.strip().lower() != "none")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {', '.join(unknown)}; use none or any of {', '.join(AUGMENTATIONS)}")
    return names


def augmenter(spec: str, input_shape: Sequence[int], num_classes: int, seed: int = 0,
              value_range: tuple[float, float] = (0.0, 1.0)) -> Callable:
    """A ``(images, labels) -> (images, labels)`` function for ``tf.data.Dataset.map`` over batches.

    Geometric and RandAugment layers run first, then at most one of MixUp/CutMix
    (which turn integer labels into soft one-hot rows). ``value_range`` is the
    range of the scaled pixels, which RandAugment needs.
    """
    names = parse_augment(spec)
    mixing = [n for n in names if n in _MIXING]
    if len(mixing) > 1:
        raise ConfigError("use at most one of mixup, cutmix")
    cv = _keras_cv()
    height, width = int(input_shape[0]), int(input_shape[1])
    builders = {
        "flip": lambda: cv.layers.RandomFlip("horizontal", seed=seed),
        "crop": lambda: cv.layers.RandomCropAndResize((height, width), crop_area_factor=(0.64, 1.0),
                                                      aspect_ratio_factor=(3 / 4, 4 / 3), seed=seed),
        "shift": lambda: cv.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=seed),
        "rotation": lambda: cv.layers.RandomRotation(0.04, fill_mode="constant", seed=seed),
        "randaugment": lambda: cv.layers.RandAugment(value_range, augmentations_per_image=2, magnitude=0.3, seed=seed),
        "mixup": lambda: cv.layers.MixUp(seed=seed),
        "cutmix": lambda: cv.layers.CutMix(seed=seed),
    }
    layers = [builders[n]() for n in names if n not in _MIXING]
    mixer = builders[mixing[0]]() if mixing else None
    grey = int(input_shape[-1]) == 1 and "randaugment" in names

    def augment(images, labels):
        if grey:  # keras-cv's RandAugment colour ops (rgb_to_grayscale) need 3 channels: augment an RGB copy
            images = tf.repeat(images, 3, axis=-1)
        for layer in layers:
            images = layer(images, training=True)
        if grey:
            images = tf.reduce_mean(images, axis=-1, keepdims=True)
        if mixer is None:
            return images, labels
        mixed = mixer({"images": images, "labels": tf.one_hot(labels, num_classes)}, training=True)
        return mixed["images"], mixed["labels"]

    return augment


def augmented(dataset, spec: str, data, seed: int):
    """``dataset``'s ``(images, labels)`` batches with ``spec`` applied in tf.data, ``data``'s pixel range kept."""
    value_range = (float(data.x_train.min()), float(data.x_train.max()))
    return dataset.map(augmenter(spec, data.input_shape, data.num_classes, seed, value_range),
                       num_parallel_calls=tf.data.AUTOTUNE)


def mixes_labels(spec: str) -> bool:
    """Whether ``spec`` includes MixUp or CutMix, whose labels are soft one-hot rows."""
    return any(name in _MIXING for name in parse_augment(spec))


@functools.cache
def _keras_cv():
    """Import keras-cv with Keras 3 as its backend, alongside kerascomp's tf_keras.

    keras-cv picks Keras 2 or 3 by looking at ``tf.keras``, which
    ``TF_USE_LEGACY_KERAS=1`` points at tf_keras; its Keras 2 path is broken
    with current tf_keras (``keras2 has no attribute 'saving'``). Its Keras 3
    path works, and on tensors in tf.data its layers need no model at all, so
    ``tf.keras`` is shown as Keras 3 only while keras-cv is imported.
    """
    keras3 = import_keras3()

    saved = tf.__dict__.get("keras")
    tf.keras = keras3
    try:
        import keras_cv
    except Exception as exc:  # a broken keras-cv install: say so instead of a traceback deep in it
        raise ConfigError(f"augmentation needs keras-cv, which failed to import: {exc}") from None
    finally:
        if saved is None:
            del tf.keras
        else:
            tf.keras = saved
    return keras_cv
