"""The one place that selects Keras 2 (tf_keras) and imports TensorFlow.

tfmot only works with tf_keras, so ``TF_USE_LEGACY_KERAS=1`` must be set before
TensorFlow is first imported. Every module that needs TensorFlow or Keras
imports ``tf`` and ``keras`` from here, never directly.

Both names are bound to stand-ins that import TensorFlow on their first
attribute access: importing TensorFlow takes seconds, and ``kerascomp --help``
or a config check should not pay for it (every technique module is imported
to build the CLI). Module-level code therefore never touches ``tf.`` or
``keras.``; classes that subclass Keras live in modules imported on use.
"""

import functools
import os
import types

from kerascomp.console import quiet_native_stderr

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["tf", "keras", "import_keras3", "unsafe_deserialization"]


@functools.cache
def _import() -> dict[str, types.ModuleType]:
    with quiet_native_stderr():
        import tensorflow
        import tf_keras

        tensorflow.config.list_physical_devices()  # device probing (CUDA's cuInit line) happens here, silenced
    return {"tf": tensorflow, "keras": tf_keras}


@functools.cache
def import_keras3() -> types.ModuleType:
    """Keras 3 (the ``keras`` package), to read users' Keras 3 files and for keras-cv.

    Imported after TensorFlow and as quietly: imported first, it loads
    TensorFlow itself and its start-up lines reach the console.
    """
    _import()
    with quiet_native_stderr():
        import keras
    return keras


def unsafe_deserialization():
    """tf_keras's scope that lets a ``Lambda`` deserialize wherever a model is rebuilt from its config (loading,
    and also cloning: tfmot's QAT transforms rebuild the model with ``from_config``, which refuses a Lambda
    outside this scope even after an unsafe load). tf_keras exposes it only under ``src``."""
    _import()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(safe_mode=False)


class _Deferred(types.ModuleType):
    """Stands for ``tensorflow`` or ``tf_keras`` until an attribute is first read."""

    def __getattr__(self, attribute: str):
        module = _import()[self.__name__]
        return getattr(module, attribute)


tf = _Deferred("tf")
keras = _Deferred("keras")
