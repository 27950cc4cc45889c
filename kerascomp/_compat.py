"""The one place that selects Keras 2 (tf_keras) and imports TensorFlow.

tfmot only works with tf_keras, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module that needs TensorFlow or Keras
imports ``tf`` and ``keras`` from here, never directly.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter out of CLI output

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
