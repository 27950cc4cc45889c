"""Data: datasets from one spec string, their splits and the input scaling they record.

:func:`load_data` reads the embedded ``digits``, an ``.npz``, an image folder
or ``tfds:NAME`` into a :class:`Dataset` (:mod:`kerascomp.data.arrays`: from numpy
arrays or a ``tf.data.Dataset``); :mod:`kerascomp.data.images` reads raw
inputs for prediction on a device, :mod:`kerascomp.data.augment` the keras-cv
augmentation of training batches. Nothing here imports TensorFlow at import time.
"""

from kerascomp.data.datasets import SPLITS, Dataset, Scaling, load_data

__all__ = ["Dataset", "Scaling", "load_data", "SPLITS"]
