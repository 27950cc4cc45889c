"""The one table of Keras 3 layers kerascomp rebuilds in tf_keras, and how their configs translate.

A Keras 3 layer config differs from its tf_keras twin in a few documented
places (dtype policies are objects, initializers carry a ``module``, some
arguments were renamed, some are new). Each difference is translated here by
rule; an argument that exists only in Keras 3 is accepted only while it holds
its default (it cannot change the computation then) and refused otherwise.
"""

from __future__ import annotations

import inspect

from kerascomp.backend import keras

__all__ = ["SUPPORTED", "DROPPED", "MODEL_CLASSES", "translate", "layer_table"]

# rebuilt as the tf_keras class of the same name, weights copied in order
SUPPORTED = frozenset({
    "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
    "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization",
    "Flatten", "Reshape", "Permute", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
    "Embedding", "MultiHeadAttention", "Attention",
    "Rescaling", "Normalization", "Resizing", "CenterCrop", "RandomCrop",
})
# random augmentation: the identity at inference, so the rebuilt model leaves them out (and says so)
DROPPED = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomHeight", "RandomWidth", "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness",
    "RandomShear", "RandomColorJitter", "RandomColorDegeneration", "RandomPosterization", "RandomInvert",
    "RandomErasing", "RandomGaussianBlur", "RandomPerspective", "RandomElasticTransform", "RandAugment", "AugMix",
    "MixUp", "CutMix",
})
MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
# input preprocessing kept inside the model: how kerascomp's techniques treat each
PREPROCESSING = {
    "Rescaling": "pruning and clustering skip it (no weights); QAT learns its output range, so int8 keeps its scale",
    "Normalization": "its mean/variance are not pruned or clustered; QAT learns its output range",
    "Resizing": "no weights; QAT learns its output range",
    "CenterCrop": "no weights; QAT learns its output range",
}

_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
_ADDED = {"MultiHeadAttention": {"query_shape": None, "key_shape": None, "value_shape": None}}  # tf_keras builds on call
_IMPLIED = {"data_format": "channels_last"}  # tf_keras' only layout where the option is missing
_BASE_KEYS = {"name", "trainable", "dtype", "dynamic", "activity_regularizer", "input_shape", "batch_input_shape",
              "batch_size"}
_OBJECT_MODULES = ("keras.initializers", "keras.regularizers", "keras.constraints")


class Untranslatable(ValueError):
    """A config value with no tf_keras equivalent; the message says which."""


def translate(class_name: str, config: dict, keras3_class: type) -> dict:
    """The tf_keras config of a supported Keras 3 layer config."""
    target = getattr(keras.layers, class_name)
    config = {_RENAMED.get(class_name, {}).get(k, k): v for k, v in config.items()}
    renamed_defaults = {_RENAMED.get(class_name, {}).get(k, k): v for k, v in _defaults(keras3_class).items()}
    accepted = _accepted(target, config, renamed_defaults, f"{class_name} option")
    return {**_ADDED.get(class_name, {}), **{key: _value(key, value) for key, value in accepted.items()}}


def _accepted(target: type, config: dict, defaults: dict, what: str) -> dict:
    """``config`` without the arguments ``target`` lacks; those must hold Keras 3's default."""
    params = inspect.signature(target.__init__).parameters
    known = set(params) | (_BASE_KEYS if issubclass(target, keras.layers.Layer) else set())
    kept = {}
    for key, value in config.items():
        if key in known:
            kept[key] = value
        elif key in defaults and _same(value, defaults[key]) or value in (None, False, {}, []) \
                or _IMPLIED.get(key) == value or key == "shared_object_id":
            continue
        else:
            raise Untranslatable(f"{what} {key}={value!r} has no tf_keras equivalent")
    return kept


def _value(key: str, value):
    if key == "dtype":
        return _dtype(value)
    if key == "activation" and isinstance(value, str):
        try:
            keras.activations.get(value)
        except ValueError:
            raise Untranslatable(f"activation {value!r} has no tf_keras equivalent") from None
    if isinstance(value, dict) and "class_name" in value:
        return _object(value)
    return value


def _dtype(value) -> str | None:
    """A Keras 3 dtype policy as the dtype tf_keras computes in (mixed policies compute in float32 here)."""
    if isinstance(value, dict):
        if value.get("class_name") != "DTypePolicy":
            raise Untranslatable(f"dtype policy {value.get('class_name')} (e.g. a Keras 3 quantized layer) is not supported")
        value = value["config"]["name"]
    return "float32" if isinstance(value, str) and value.startswith("mixed_") else value


def _object(value: dict) -> dict:
    """A serialized initializer, regularizer or constraint in tf_keras's ``{class_name, config}`` form."""
    module = getattr(keras, value["module"].split(".")[1]) if value.get("module") in _OBJECT_MODULES else None
    target = getattr(module, value["class_name"], None) if module else None
    if target is None:
        raise Untranslatable(f"{value.get('module')}.{value['class_name']} has no tf_keras equivalent")
    config = value.get("config") or {}
    return {"class_name": value["class_name"], "config": _accepted(target, config, {}, value["class_name"])}


def _defaults(cls: type) -> dict:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _same(a, b) -> bool:
    try:
        return bool(a == b) or (isinstance(a, (list, tuple)) and list(a) == list(b))
    except Exception:  # noqa: BLE001 (arrays and odd defaults compare badly; treat as different)
        return False


def layer_table() -> list[tuple[str, str]]:
    """``(class name, what happens on import)`` for every Keras 3 layer class kerascomp knows: the README table."""
    rows = [(name, "rebuilt, weights copied") for name in sorted(SUPPORTED)]
    rows += [(name, "dropped (identity at inference)") for name in sorted(DROPPED)]
    return rows + [(name, "inlined into one flat graph") for name in ("Sequential", "Functional")]
