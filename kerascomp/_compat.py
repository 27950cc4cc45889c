"""The one place that selects Keras 2 (tf_keras) and imports TensorFlow.

tfmot only works with tf_keras, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module that needs TensorFlow or Keras
imports ``tf`` and ``keras`` from here, never directly.
"""

import os

from kerascomp._quiet import quiet_native_stderr

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


with quiet_native_stderr():
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices()  # device probing (CUDA's cuInit line) happens here, silenced, not later

__all__ = ["tf", "keras"]
