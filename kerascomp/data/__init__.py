"""Data: datasets from one spec string, their splits and the input scaling they record.

:func:`load_data` reads the embedded ``digits``, an ``.npz``, an image folder
or ``tfds:NAME`` into a :class:`Dataset` (:mod:`kerascomp.data.dataset`: the class,
and one from numpy arrays or a ``tf.data.Dataset``); :mod:`kerascomp.data.images` reads raw
inputs for prediction on a device, :mod:`kerascomp.data.augment` the keras-cv
augmentation of training batches. Nothing here imports TensorFlow at import time.
"""

from kerascomp.data.dataset import SPLITS, Dataset, Scaling, from_arrays, from_tf_dataset, output_names
from kerascomp.data.datasets import load_data

__all__ = ["Dataset", "Scaling", "load_data", "from_arrays", "from_tf_dataset", "output_names", "SPLITS"]
