"""A registered technique runs through one entry point: the CLI command and the pipeline stage agree."""

import dataclasses
import json

import pytest
import yaml

from kerascomp import registry
from kerascomp.cli import main
from kerascomp.saving import load_meta

CASES = {
    "prune": ({"sparsity": 0.5, "epochs": 1}, ["--sparsity", "0.5", "--epochs", "1"]),
    "cluster": ({"clusters": 8, "epochs": 1}, ["--clusters", "8", "--epochs", "1"]),
}


def test_every_builtin_technique_is_registered_with_a_config_and_summary():
    known = registry.techniques()
    assert {"prune", "cluster", "qat", "swap"} <= set(known)
    for name, technique in known.items():
        assert technique.name == name and callable(technique.apply) and callable(technique.summary)
        assert dataclasses.is_dataclass(technique.config) and technique.module.startswith("kerascomp.compress.")


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_and_pipeline_give_the_same_metrics_and_sidecar(name, digits_model, tmp_path, capsys):
    stage_options, cli_options = CASES[name]
    source, _ = digits_model
    cli_out, cli_json = tmp_path / "cli.keras", tmp_path / "cli.json"
    assert main([name, str(source), *cli_options, "--out", str(cli_out), "--json", str(cli_json)]) == 0
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"spec": "digits"}, "teacher": {"path": str(source)},
                                      "stages": [{name: stage_options}],
                                      "summary": {"baseline": "teacher", "final": name}}))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    stage = report["stages"][-1]["metrics"]
    cli = json.loads(cli_json.read_text())
    for key in ("val_accuracy", "test_accuracy", "baseline", "preflight"):
        assert stage[key] == cli[key], key
    assert stage["summary"] == cli["summary"]
    pipeline_entry = load_meta(tmp_path / "run" / "models" / f"{name}.keras")["compression"][-1]
    cli_entry = load_meta(cli_out)["compression"][-1]
    drop = ("source", "out")
    assert {k: v for k, v in pipeline_entry.items() if k not in drop} == {k: v for k, v in cli_entry.items()
                                                                          if k not in drop}
    assert pipeline_entry["stage"] == name
