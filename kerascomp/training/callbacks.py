"""Keras callbacks of kerascomp's training runs (a module of their own: subclassing Keras imports TensorFlow)."""

from __future__ import annotations

import math
import signal
import threading
import time

from kerascomp.backend import keras
from kerascomp.console import echo
from kerascomp.tasks import METRICS

__all__ = ["EpochTimer", "EpochLog", "KeepBest", "StopOnSignal"]

def shown(logs: dict) -> list[str]:
    """An epoch line's numbers, in order: the loss and the task's metric (every output's, ``digit_accuracy``),
    then the same on validation."""
    train = ["loss"] + [k for k in logs if not k.startswith("val_") and k.endswith(METRICS)]
    return [k for k in train + [f"val_{k}" for k in train] if k in logs]


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch (training plus validation)."""

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class EpochLog(keras.callbacks.Callback):
    """One short line per epoch through :func:`kerascomp.console.echo`, in place of Keras's progress bar.

    Keras's bar writes a fragment per batch (a piped log of the main job was
    165 KB) and, with distillation's extra losses, lines of 246 columns. This
    line holds the epoch, its seconds and the four numbers a person reads:
    ``epoch  3/20   4.1 s  loss 0.4123  accuracy 0.8710  val_loss 0.5200  val_accuracy 0.8600``.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        width = len(str(self.epochs))
        numbers = "  ".join(f"{key} {logs[key]:.4f}" for key in shown(logs))
        echo(f"epoch {epoch + 1:>{width}}/{self.epochs} {time.perf_counter() - self._start:6.1f} s  {numbers}")


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


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during ``fit`` ends training at the end of the running batch, then interrupts.

    A ``KeyboardInterrupt`` raised wherever the signal lands inside TensorFlow's Python can kill the process:
    measured, 3 of 20 ``kerascomp run`` processes sent SIGINT mid-epoch aborted (``free(): invalid next size``)
    in the next epoch's ``make_iterator``, with no ``Error:`` line and the folder still locked. Held here, the
    signal is delivered again (to the handler that was in place: the CLI's, or Python's) once ``fit`` is out of
    the batch. A second signal is delivered at once, for a user who will not wait for the batch.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def on_train_begin(self, logs=None):
        self.received, self._before = None, {}
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            self._before = {signum: signal.signal(signum, self._hold) for signum in self.SIGNALS}

    def _hold(self, signum, frame):
        if self.received is not None:
            self._deliver(signum)
        self.received = signum
        self.model.stop_training = True  # read by fit after every batch

    def on_train_end(self, logs=None):
        if self.received is not None:
            self._deliver(self.received)
        self._restore()

    def _deliver(self, signum):
        self._restore()
        signal.raise_signal(signum)  # handled on return, by the handler now in place again

    def _restore(self):
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        self._before = {}
