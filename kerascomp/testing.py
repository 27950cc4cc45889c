"""One harness every registered technique must pass, built-in or a user's own.

:func:`run_technique_test` checks the contract a technique signs by
registering (see :mod:`kerascomp.compress.registry`): ``apply`` leaves its input model
untouched; the result saves and loads in safe mode with the same predictions;
it converts to a float ``.tflite`` whose interpreter agrees with Keras within
max/mean tolerances; and the ``kerascomp NAME`` command and a pipeline stage
with the same options give the same metrics and the same sidecar entry.
Use it from a test with a small model and short settings::

    def test_my_technique(tmp_path, digits, model_path):
        run_technique_test("mine", MyConfig(epochs=1), model_path, digits, tmp_path)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kerascomp import runtime
from kerascomp.cli import main
from kerascomp.compress import registry
from kerascomp.data import Dataset
from kerascomp.export import export
from kerascomp.options import cli_args, option_fields
from kerascomp.pipeline import run_pipeline
from kerascomp.pipeline.config import parse_config
from kerascomp.saving import load, load_meta, load_model, save_model

__all__ = ["run_technique_test", "MAX_ABS_DIFF", "MEAN_ABS_DIFF", "COMPARED_METRICS"]

MAX_ABS_DIFF = 1e-3  # float .tflite vs Keras logits, as export's own verification allows for fp32
MEAN_ABS_DIFF = 1e-4
COMPARED_METRICS = ("val_accuracy", "test_accuracy", "baseline")  # deterministic; timings are not


def run_technique_test(name: str, config: object, model_path: str | os.PathLike, data: Dataset,
                       tmp_path: str | os.PathLike) -> dict:
    """Run every contract check on technique ``name`` with ``config``; returns the CLI run's metrics.

    ``model_path`` is a saved tf_keras model that fits ``data``, which must be
    loaded as the CLI loads it (``load_data(spec, seed=config.seed)``).
    Raises AssertionError naming the first broken promise.
    """
    technique, tmp_path = registry.get(name), Path(tmp_path)
    assert data.seed == config.seed, "load the data with the config's seed, as the CLI does"
    model = load(model_path, data)[0]
    before = [w.copy() for w in model.get_weights()]
    result, _ = technique.apply(model, data, config)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), f"{name} changed its input model"
    reloaded = load_model(save_model(result, tmp_path / "direct.keras"))
    x = data.x_test[:64]
    expected = result.predict(x, verbose=0)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5,
                               err_msg=f"{name}: the saved result predicts differently after loading")
    _check_tflite(reloaded, data, tmp_path / "direct.tflite")
    cli = _run_cli(name, config, model_path, data, tmp_path)
    pipeline = _run_pipeline(name, config, model_path, data, tmp_path)
    for key in COMPARED_METRICS:
        assert cli[key] == pipeline["metrics"][key], f"{name}: CLI and pipeline differ in {key}"
    assert _entry(cli["out"]) == _entry(pipeline["model"]), f"{name}: CLI and pipeline sidecars differ"
    return cli


def _check_tflite(model, data: Dataset, path: Path) -> None:
    export(model, path, data=data)
    x = data.x_test[:64]
    diff = np.abs(runtime.load(path).predict(x) - model.predict(x, verbose=0))
    assert diff.max() <= MAX_ABS_DIFF and diff.mean() <= MEAN_ABS_DIFF, \
        f"float .tflite disagrees with Keras: max |d| {diff.max():.2g}, mean {diff.mean():.2g}"


def _run_cli(name: str, config, model_path, data: Dataset, tmp_path: Path) -> dict:
    technique = registry.get(name)
    model_input = [str(model_path)] if technique.input_key == "input" else [f"--{technique.input_key}", str(model_path)]
    code = main([name, *model_input, *cli_args(config), "--seed", str(config.seed), "--data", data.name,
                 "--out", str(tmp_path / "cli.keras"), "--json", str(tmp_path / "cli.json")])
    assert code == 0, f"kerascomp {name} exited with {code}"
    return json.loads((tmp_path / "cli.json").read_text())


def _run_pipeline(name: str, config, model_path, data: Dataset, tmp_path: Path) -> dict:
    options = {f.name: _plain(getattr(config, f.name)) for f in option_fields(type(config))
               if getattr(config, f.name) is not None}
    raw = {"seed": config.seed, "data": {"spec": data.name},
           "teacher": {"path": str(model_path)}, "stages": [{name: options}],
           "summary": {"baseline": "teacher", "final": name}}
    document = run_pipeline(parse_config(raw), tmp_path / "run", verbose=0)
    stage = document["stages"][-1]
    return {"metrics": stage["metrics"], "model": tmp_path / "run" / stage["model"]}


def _entry(model_path) -> dict:
    """The sidecar's newest compression entry, without the paths (which differ by design)."""
    entry = dict(load_meta(model_path)["compression"][-1])
    return {k: v for k, v in entry.items() if k not in ("source", "out")}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
