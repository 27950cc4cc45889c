"""Every config shipped in ``configs/`` parses and validates: stage options, references, summary names."""

from pathlib import Path

import pytest

from kerascomp.pipeline.run import validate
from kerascomp.pipeline.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_the_configs_folder_is_not_empty():
    assert {p.name for p in CONFIGS} >= {"digits.yaml", "smoke.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_validates(path, digits_model):
    overrides = ()
    if "path:" in path.read_text():  # a bring-your-own-model config: point it at a real model file
        overrides = (f"teacher.path={digits_model[0]}",)
    config = load_config(path, overrides)
    validate(config)
    assert config.stages and (config.final or config.max_drop is not None)  # a final artifact, named or chosen
    assert f"kerascomp run configs/{path.name}" in path.read_text()  # each config says how to run it
