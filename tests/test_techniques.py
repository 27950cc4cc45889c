"""Every registered technique keeps the contract of kerascomp.testing.run_technique_test."""

import dataclasses

import pytest

from kerascomp.compress import registry
from kerascomp.compress.cluster import ClusterConfig
from kerascomp.compress.distill import StudentConfig
from kerascomp.compress.prune import PruneConfig
from kerascomp.compress.quantize import QATConfig
from kerascomp.compress.shrink import ShrinkConfig
from kerascomp.compress.swap import SwapConfig
from kerascomp.errors import ConfigError
from kerascomp.testing import run_technique_test

CASES = {  # short settings: the harness checks the contract, the technique's own tests check its quality
    "prune": PruneConfig(sparsity=0.5, epochs=1),
    "cluster": ClusterConfig(clusters=8, epochs=1),
    "qat": QATConfig(epochs=1),
    "swap": SwapConfig(tolerance=100.0, epochs_per_block=0, fit_samples=256, fit_epochs=1, candidates=("separable",),
                       bench_runs=0),
    "distill": StudentConfig(student="cnn", student_args={"width": 4}, epochs=1),
    "shrink": ShrinkConfig(keep=0.5, epochs=1, round_to=4),
}


def test_every_builtin_technique_has_a_case():
    builtin = {name for name, t in registry.techniques().items() if t.module.startswith("kerascomp.")}
    assert builtin == set(CASES)


MIRRORED_EVERY_RUN = ("qat",)  # its refusal under MirroredStrategy; prune's wrappers there: test_prune; the rest: slow


def _cases():
    """Every technique alone and under MirroredStrategy on the two logical CPUs conftest.py sets up.

    The mirrored runs of the techniques whose training is the shared trainer's
    are marked slow: each costs 20-25 s and the CI suite keeps to 8 minutes.
    """
    for name in sorted(CASES):
        yield pytest.param(name, "default", id=f"default-{name}")
        marks = () if name in MIRRORED_EVERY_RUN else pytest.mark.slow
        yield pytest.param(name, "mirrored", id=f"mirrored-{name}", marks=marks)


@pytest.mark.parametrize("name, strategy", _cases())
def test_technique_keeps_the_contract(name, strategy, digits, digits_model, tmp_path):
    if name == "qat" and strategy != "default":
        with pytest.raises(ConfigError, match="QAT runs on one device only"):
            dataclasses.replace(CASES[name], strategy=strategy)
        return
    config = dataclasses.replace(CASES[name], strategy=strategy)
    metrics = run_technique_test(name, config, digits_model[0], digits, tmp_path)
    assert metrics["source"] == str(digits_model[0])
