"""Running techniques on files: one technique on one file, or a YAML chain of stages.

:mod:`~kerascomp.pipeline.runner` (:func:`compress_file`) is what every technique
command calls; :mod:`~kerascomp.pipeline.config` turns YAML into validated
dataclasses; :mod:`~kerascomp.pipeline.stages` runs each stage kind;
:mod:`~kerascomp.pipeline.fingerprint` decides what ``--resume`` may skip;
:mod:`~kerascomp.pipeline.run` (:func:`run_pipeline`) runs the chain and makes
the final choice; :mod:`~kerascomp.pipeline.report` writes report.md and report.json.
"""

from kerascomp.pipeline.config import load_config
from kerascomp.pipeline.run import run_pipeline
from kerascomp.pipeline.runner import compress_file

__all__ = ["load_config", "run_pipeline", "compress_file"]
