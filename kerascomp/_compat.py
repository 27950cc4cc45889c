"""The one place that selects Keras 2 (tf_keras) and imports TensorFlow.

tfmot only works with tf_keras, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module that needs TensorFlow or Keras
imports ``tf`` and ``keras`` from here, never directly.
"""

import contextlib
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what TensorFlow's C++ side prints while it loads (absl and CUDA-probe lines).

    Those lines bypass ``TF_CPP_MIN_LOG_LEVEL`` and would bury the one-line
    errors and summaries of the CLI. Python exceptions are unaffected; set
    ``KERASCOMP_DEBUG=1`` to see everything.
    """
    if os.environ.get("KERASCOMP_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices()  # device probing (CUDA's cuInit line) happens here, silenced, not later

__all__ = ["tf", "keras"]
