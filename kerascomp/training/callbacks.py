"""Keras callbacks of kerascomp's training runs (a module of their own: subclassing Keras imports TensorFlow)."""

from __future__ import annotations

import math
import time

from kerascomp.backend import keras

__all__ = ["EpochTimer", "KeepBest"]


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch (training plus validation)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class KeepBest(keras.callbacks.Callback):
    """Keep the weights of the best validation epoch among those at the final compression.

    :func:`kerascomp.training.train` restores its early-stopping best weights at the end of
    every run, which for a pruning schedule may be an epoch *before* the target
    sparsity was reached. This callback runs after it and puts back the best
    epoch from ``start_epoch`` on (0-based), or the last epoch when none is
    better.
    """

    def __init__(self, start_epoch: int = 0, monitor: str = "val_loss"):
        super().__init__()
        self.start_epoch, self.monitor = start_epoch, monitor

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self._weights = math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        value = (logs or {}).get(self.monitor)
        if value is None or value < self.best:  # without validation the latest epoch is kept
            self.best = self.best if value is None else value
            self.best_epoch, self._weights = epoch, self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._weights is not None:
            self.model.set_weights(self._weights)
