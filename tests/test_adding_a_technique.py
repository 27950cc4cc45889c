"""docs/adding-a-technique.md, run as written: a toy technique registered from this module becomes a command,
a pipeline stage and a report row with no other edit, and passes the shared harness."""

import dataclasses
import json

import numpy as np
import pytest
import yaml

from kerascomp.cli import main
from kerascomp.compress import registry
from kerascomp.options import option
from kerascomp.testing import run_technique_test

# --- the technique: everything below up to the fixture is what the guide shows ------------------------------------

@dataclasses.dataclass(kw_only=True)
class RoundConfig:
    """Keep ``decimals`` decimal places of every weight (fewer distinct values: smaller after gzip)."""

    decimals: int = option(2, "Decimal places kept in every weight.")
    seed: int = 0
    verbose: int = 1


def round_weights(model, data, config, *, teacher=None):
    """A rounded copy of ``model`` (the input is left untouched) and its accuracy before and after."""
    from kerascomp.backend import keras
    from kerascomp.training import evaluate

    rounded = keras.models.clone_model(model)
    rounded.set_weights([np.round(w, config.decimals) for w in model.get_weights()])
    distinct = max(len(np.unique(w)) for w in rounded.get_weights())
    return rounded, {**evaluate(rounded, data), "baseline": evaluate(model, data), "distinct_values": distinct}


ROUND = registry.Technique(
    name="round", config=RoundConfig, apply=round_weights, teacher=False,
    help="Round every weight to a few decimal places.",
    summary=lambda metrics: f"at most {metrics['distinct_values']} distinct values per weight tensor",
    strength=registry.Strength("decimals", (4, 2, 1, 0)))


@pytest.fixture
def toy():
    registry.register(ROUND)
    yield ROUND
    registry.unregister("round")


def test_the_toy_technique_is_a_command_with_options_from_its_config(toy, digits_model, tmp_path, capsys):
    assert main(["--help"]) == 0 and "round " in capsys.readouterr().out
    assert main(["round", "--help"]) == 0 and "--decimals INTEGER" in capsys.readouterr().out
    out = tmp_path / "rounded.keras"
    assert main(["round", str(digits_model[0]), "--decimals", "1", "--out", str(out)]) == 0
    assert "distinct values per weight tensor" in capsys.readouterr().out
    from kerascomp.saving import load_meta, load_model

    assert all(np.allclose(w, np.round(w, 1)) for w in load_model(out).get_weights())
    assert load_meta(out)["compression"][-1]["stage"] == "round"


def test_the_toy_technique_is_a_stage_and_a_report_row(toy, digits_model, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"spec": "digits"}, "teacher": {"path": str(digits_model[0])},
        "stages": [{"round": {"decimals": 1}}, {"convert": {"models": ["teacher", "round"]}},
                   {"bench": {"runs": 2, "warmup": 0}}],
        "summary": {"baseline": "teacher_fp32", "final": "round_fp32"}}))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s["kind"] for s in report["stages"]] == ["load", "round", "convert", "bench"]
    assert "round_fp32" in [row["name"] for row in report["results"]]
    assert report["summary"]["gzip_ratio"] > 1  # rounded weights compress better


def test_the_toy_technique_passes_the_shared_harness(toy, digits, digits_model, tmp_path):
    run_technique_test("round", RoundConfig(decimals=2), digits_model[0], digits, tmp_path)


def test_a_name_is_registered_once(toy):
    with pytest.raises(Exception, match="already registered"):
        registry.register(dataclasses.replace(ROUND, apply=np.round))
    with pytest.raises(Exception, match="cannot register"):
        registry.register(dataclasses.replace(ROUND, name="convert"))
