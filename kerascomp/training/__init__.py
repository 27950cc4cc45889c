"""Training: fit a model on a :class:`~kerascomp.data.Dataset`, alone or distilled from a teacher.

:mod:`~kerascomp.training.trainer` holds :func:`train` and :func:`evaluate`;
:mod:`~kerascomp.training.distillation` the distillation settings and checks;
:mod:`~kerascomp.training.distiller` the ``Distiller`` (a ``keras.Model`` with its
own ``train_step``, imported with TensorFlow on use); :mod:`~kerascomp.training.distribute`
the ``tf.distribute`` strategies; :mod:`~kerascomp.training.callbacks` the callbacks.
"""

from kerascomp.training.distillation import FROM_INPUT, NO_TEACHER, DistillConfig, check_compatible
from kerascomp.training.trainer import ModelSpec, TrainConfig, evaluate, train, user_callbacks

__all__ = ["TrainConfig", "train", "evaluate", "user_callbacks", "ModelSpec", "DistillConfig", "check_compatible", "FROM_INPUT",
           "NO_TEACHER"]
