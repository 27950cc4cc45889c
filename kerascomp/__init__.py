"""kerascomp: compress Keras models and prove the gain on the artifact that ships.

Public names are loaded lazily (PEP 562) so that ``import kerascomp`` and the
edge runtime stay free of TensorFlow until a TensorFlow-backed name is used.
Every registered technique is exported too: ``kerascomp.prune`` is its
``apply`` and ``kerascomp.PruneConfig`` its config (see :mod:`kerascomp.compress.registry`).
"""

import functools as _functools
from importlib import import_module as _import_module
from importlib.util import find_spec as _find_spec

__version__ = "0.1.0"

_LAZY = {
    "load_data": "kerascomp.data",
    "Dataset": "kerascomp.data",
    "Scaling": "kerascomp.data",
    "build_model": "kerascomp.models",
    "train": "kerascomp.training",
    "evaluate": "kerascomp.training",
    "TrainConfig": "kerascomp.training",
    "DistillConfig": "kerascomp.training",
    "Distiller": "kerascomp.training.distiller",
    "load_model": "kerascomp.saving",
    "load": "kerascomp.saving",
    "load_with_data": "kerascomp.saving",
    "save_model": "kerascomp.saving",
    "import_model": "kerascomp.interop",
    "save_keras3": "kerascomp.interop",
    "trusting_code": "kerascomp.interop",
    "inspect_model": "kerascomp.analysis.inspect",
    "inspect": "kerascomp.analysis.inspect",
    "convert": "kerascomp.export",
    "run": "kerascomp.pipeline",
    "distill": "kerascomp.compress.distill",
    "sweep": "kerascomp.analysis.sweep",
    "swap_plan": "kerascomp.compress.swap",
    "sensitivity": "kerascomp.compress.sensitivity",
    "SensitivityConfig": "kerascomp.compress.sensitivity",
    "choose_sparsities": "kerascomp.compress.sensitivity",
    "register": "kerascomp.compress.registry",
    "Technique": "kerascomp.compress.registry",
    "Strength": "kerascomp.compress.registry",
    "load_config": "kerascomp.pipeline",
    "run_pipeline": "kerascomp.pipeline",
    "compress_file": "kerascomp.pipeline",
    "KerascompError": "kerascomp.errors",
    "DataError": "kerascomp.errors",
    "ModelError": "kerascomp.errors",
    "ConfigError": "kerascomp.errors",
}
_ALIASES = {"build_model": "build", "swap_plan": "plan", "distill": "apply", "sensitivity": "apply",
            "inspect": "inspect_model", "convert": "export", "run": "run_pipeline"}
_CALLABLE_PACKAGES = ("bench",)  # a subpackage that is also the call of its command: kerascomp.bench(paths, data)

__all__ = ["__version__", *_LAZY, *_CALLABLE_PACKAGES]


def __getattr__(name: str):
    if name in _CALLABLE_PACKAGES:
        return _import_module(f"{__name__}.{name}")
    if name.startswith("_") or name not in _LAZY and _find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module 'kerascomp' has no attribute {name!r}")  # a submodule being imported
    _import_module("kerascomp.compress.registry")  # installs the techniques' load and strip hooks into saving
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), _ALIASES.get(name, name))
        value = _named(value, name) if name in _ALIASES and callable(value) and not isinstance(value, type) else value
    else:
        value = _technique_exports().get(name)
        if value is None:
            raise AttributeError(f"module 'kerascomp' has no attribute {name!r}")
    globals()[name] = value
    return value


def _technique_exports() -> dict:
    """Each registered technique's ``apply`` under its name and its config class under the class's name."""
    exports = {}
    for name, technique in _import_module("kerascomp.compress.registry").techniques().items():
        exports[name], exports[technique.config.__name__] = _technique_call(technique.apply, name), technique.config
    return exports


def _technique_call(apply, name: str):
    """A technique's ``apply`` as the Python API offers it: under its own name, taking a Keras 3 model in memory
    (imported as its file would be), feeding the model the input scaling it was loaded with, fine-tuning with
    the loss the model was compiled with (as a file's), and passing ``callbacks=[...]`` to every training run
    inside."""
    saving = _import_module("kerascomp.saving")

    def call(model, data, *args, callbacks=(), **kwargs):
        own = saving.compile_config(model)
        model = saving.as_tf_keras(model, data)
        with (_import_module("kerascomp.training").user_callbacks(callbacks),  # every fit inside hears them
              _import_module("kerascomp.training.compiled").compiled_as(own)):
            result, metrics = apply(model, saving.fit_data(model, data), *args, **kwargs)
        saving.carry_scaling(result, model)
        return result, metrics

    call = _functools.wraps(apply)(call)
    call.__name__ = call.__qualname__ = name
    return call


def _named(function, name: str):
    """``function`` under the technique's name, so ``help(kerascomp.prune)`` says ``prune``, not ``apply``."""
    @_functools.wraps(function)
    def named(*args, **kwargs):
        return function(*args, **kwargs)

    named.__name__ = named.__qualname__ = name
    return named


def __dir__():
    return sorted({*__all__, *_technique_exports()})
