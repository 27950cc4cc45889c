"""kerascomp: compress Keras models and prove the gain on the artifact that ships.

Public names are loaded lazily (PEP 562) so that ``import kerascomp`` and the
edge runtime stay free of TensorFlow until a TensorFlow-backed name is used.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "load_data": "kerascomp.data",
    "Dataset": "kerascomp.data",
    "build_model": "kerascomp.models",
    "train": "kerascomp.training",
    "TrainConfig": "kerascomp.training",
    "load_model": "kerascomp.saving",
    "load": "kerascomp.saving",
    "import_model": "kerascomp.interop",
    "save_keras3": "kerascomp.interop",
    "inspect_model": "kerascomp.preflight",
    "save_model": "kerascomp.saving",
    "distill": "kerascomp.compress.distill",
    "Distiller": "kerascomp.compress.distill",
    "DistillConfig": "kerascomp.compress.distill",
    "sweep": "kerascomp.compress.sweep",
    "swap": "kerascomp.compress.swap",
    "SwapConfig": "kerascomp.compress.swap",
    "swap_plan": "kerascomp.compress.swap",
    "prune": "kerascomp.compress.prune",
    "PruneConfig": "kerascomp.compress.prune",
    "cluster": "kerascomp.compress.cluster",
    "ClusterConfig": "kerascomp.compress.cluster",
    "qat": "kerascomp.compress.quantize",
    "QATConfig": "kerascomp.compress.quantize",
    "sensitivity": "kerascomp.compress.sensitivity",
    "SensitivityConfig": "kerascomp.compress.sensitivity",
    "choose_sparsities": "kerascomp.compress.sensitivity",
    "load_config": "kerascomp.config",
    "run_pipeline": "kerascomp.pipeline",
    "KerascompError": "kerascomp.errors",
    "DataError": "kerascomp.errors",
    "ModelError": "kerascomp.errors",
    "ConfigError": "kerascomp.errors",
}
_ALIASES = {"build_model": "build", "swap": "apply", "swap_plan": "plan", "distill": "apply", "prune": "apply", "cluster": "apply", "qat": "apply", "sensitivity": "apply"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kerascomp' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
