import json
import os
import shutil

import pytest
import yaml

from kerascomp.pipeline import stages
from kerascomp.cli import main
from kerascomp.errors import ConfigError
from kerascomp.pipeline import run_pipeline
from kerascomp.pipeline.config import load_config

SMALL = {
    "seed": 0,
    "data": {"spec": "digits"},
    "teacher": {"model": "cnn", "args": {"width": 8}, "train": {"epochs": 3}},
    "stages": [
        {"train": {"name": "small", "model": "mlp", "args": {"hidden": 32}, "epochs": 3}},
        {"convert": {"models": ["teacher", "small"], "quantize": ["fp32", "int8"]}},
        {"bench": {"runs": 10, "warmup": 1}},
    ],
    "summary": {"baseline": "teacher_fp32", "final": "small_int8"},
}


def write_config(folder, raw=SMALL):
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


TRAINED_RUN = pytest.mark.xdist_group("trained_run")  # the tests of one module-scoped run share its worker


@pytest.fixture(scope="module")
def _trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder)
    assert main(["run", str(config), "--out", str(folder / "out")]) == 0
    return folder


@pytest.fixture
def finished_run(_trained_run, tmp_path):
    """A private copy of the one trained run: tests resume, rerun and delete files in it in any order."""
    folder = shutil.copytree(_trained_run, tmp_path / "run")
    return folder / "pipeline.yaml", folder / "out"


@TRAINED_RUN
def test_run_writes_the_report_contract(finished_run):
    _, out = finished_run
    document = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in document["stages"]] == ["teacher", "small", "convert", "bench"]
    assert all(s["seconds"] > 0 for s in document["stages"])
    names = [r["name"] for r in document["results"]]
    assert names == ["teacher_fp32", "teacher_int8", "small_fp32", "small_int8"]
    rows = {r["name"]: r for r in document["results"]}
    summary = document["summary"]
    assert summary["gzip_ratio"] == pytest.approx(rows["teacher_fp32"]["gzip_bytes"] / rows["small_int8"]["gzip_bytes"])
    assert summary["accuracy_drop_pp"] == pytest.approx(
        100 * (rows["teacher_fp32"]["accuracy"] - rows["small_int8"]["accuracy"]))
    assert summary["latency_ratio"] > 0
    final = document["final"]
    assert sum(map(sum, final["confusion_matrix"])) == 450
    assert final["accuracy"] == pytest.approx(rows["small_int8"]["accuracy"])
    for name in names:
        assert (out / "tflite_models" / f"{name}.tflite").is_file()
    for plot in ("tradeoff", "curves", "epoch_seconds", "confusion", "per_class", "sparsity"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "report.md").read_text()
    assert "![accuracy vs size and latency](plots/tradeoff.png)" in markdown
    assert "| gzip size (KB) |" in markdown


@TRAINED_RUN
def test_resume_skips_unchanged_stages_and_keeps_the_final_artifact(finished_run, capsys):
    config, out = finished_run
    final = (out / "tflite_models" / "small_int8.tflite").read_bytes()
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("unchanged, skipped") == 4
    assert (out / "tflite_models" / "small_int8.tflite").read_bytes() == final


@TRAINED_RUN
def test_a_changed_option_reruns_that_stage_and_the_ones_after(finished_run, capsys):
    config, out = finished_run
    assert main(["run", str(config), "--out", str(out), "--resume", "--set", "stages.1.convert.quantize=[fp32,int8,float16]",
                 "--set", "summary.final=small_float16"]) == 0
    printed = capsys.readouterr().out
    assert "[teacher] unchanged" in printed and "[small] unchanged" in printed
    assert "[convert] convert" in printed and "[bench] bench" in printed
    document = json.loads((out / "report.json").read_text())
    assert "small_float16" in [r["name"] for r in document["results"]]
    assert document["summary"]["final"] == "small_float16"


@TRAINED_RUN
def test_report_command_rerenders_from_json(finished_run):
    _, out = finished_run
    (out / "report.md").unlink()
    (out / "plots" / "tradeoff.png").unlink()
    assert main(["report", str(out)]) == 0
    assert "## Summary" in (out / "report.md").read_text()
    assert (out / "plots" / "tradeoff.png").is_file()


def test_interrupted_run_resumes_from_the_last_finished_stage(tmp_path, monkeypatch, capsys):
    config = load_config(write_config(tmp_path))

    def crash(stage, ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(stages.HANDLERS, "bench", stages.Handler(stages.HANDLERS["bench"].check, crash))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, tmp_path / "out", verbose=0)
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").rglob("*.tmp*"))
    monkeypatch.undo()
    capsys.readouterr()
    run_pipeline(config, tmp_path / "out", resume=True, verbose=0)
    printed = capsys.readouterr().out
    assert printed.count("unchanged, skipped") == 3 and "[bench] bench" in printed


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["stages"][0]["train"].update(epocs=3), "stages[0].train: unknown key 'epocs'"),
    (lambda c: c.update(stagez=[]), "config: unknown key 'stagez'"),
    (lambda c: c["stages"].append({"shrnk": {}}), "stages[3]: unknown stage 'shrnk'"),
    (lambda c: c["stages"][1]["convert"].update(models=["nobody"]), "stages[1].convert.models: no model named 'nobody'"),
    (lambda c: c["stages"][1]["convert"].update(quantize=["int4"]), "unknown mode 'int4'"),
    (lambda c: c["summary"].update(final="missing_int8"), "summary.final: 'missing_int8' is not produced"),
    (lambda c: c["teacher"].update(path="x.keras"), "teacher: give either 'model'"),
    (lambda c: c["stages"][0]["train"].update(epochs=0), "stages[0].train: epochs must be at least 1"),
])
def test_config_mistakes_name_the_key_and_write_nothing(tmp_path, capsys, edit, message):
    raw = yaml.safe_load(yaml.safe_dump(SMALL))
    edit(raw)
    out = tmp_path / "out"
    assert main(["run", str(write_config(tmp_path, raw)), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("Error:") and message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_a_second_run_on_a_folder_in_use_is_refused_at_once_and_a_dead_owners_lock_is_taken_over(tmp_path, capsys):
    """Two `kerascomp run` on one --out both ran to the end, writing the same state.json, models and report."""
    import subprocess
    import sys

    from kerascomp.files import LOCK_FILE, one_writer

    out = tmp_path / "out"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / LOCK_FILE).write_text(str(owner.pid))
        assert main(["run", str(write_config(tmp_path)), "--out", str(out)]) == 1
        error = capsys.readouterr().err
        assert error.startswith("Error:") and f"another kerascomp run (pid {owner.pid})" in error
        assert error.count("\n") == 1 and sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        owner.kill()
        owner.wait()
    with one_writer(out):  # its owner is dead now: the folder is taken over, held by this process, then let go
        assert (out / LOCK_FILE).read_text() == str(os.getpid())
    assert not (out / LOCK_FILE).exists()


def test_set_rejects_a_path_through_a_scalar(tmp_path):
    with pytest.raises(ConfigError, match="--set seed.x"):
        load_config(write_config(tmp_path), ("seed.x=1",))


def test_the_pipelines_own_stage_kinds_are_the_names_no_technique_may_take():
    from kerascomp.compress import registry

    assert set(stages.HANDLERS) == set(registry.RESERVED)
