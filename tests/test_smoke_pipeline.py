"""The main job, small: ``configs/smoke.yaml`` runs every stage kind through ``kerascomp run`` and keeps the contracts."""

import json
from pathlib import Path

import pytest

from kerascomp.cli import main
from kerascomp.pipeline.config import stage_kinds

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
RESULT_KEYS = {"name", "path", "format", "quantization", "params", "nonzero_params", "size_bytes", "gzip_bytes",
               "accuracy", "latency_ms", "batch_size", "threads", "kernel_path"}
PLOTS = ("tradeoff", "curves", "epoch_seconds", "confusion", "per_class", "sparsity")
pytestmark = pytest.mark.xdist_group("smoke_run")  # one worker builds the module's run (a minute), not each


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", str(SMOKE), "--out", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_every_stage_kind_runs_and_every_output_exists(smoke_run):
    out, report = smoke_run
    assert {s["kind"] for s in report["stages"]} == set(stage_kinds())
    for stage in report["stages"]:
        assert stage["seconds"] > 0 and isinstance(stage["metrics"], dict)
        for path in stage["outputs"]:
            assert (out / path).is_file() and (out / (path + ".json")).is_file()  # every output has its sidecar
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob(".auto-*"))
    assert "## Where the nodes run" in (out / "report.md").read_text()


def test_report_json_keeps_the_bench_and_summary_contract(smoke_run):
    out, report = smoke_run
    assert {"kerascomp_version", "config", "dataset", "machine", "stages", "results", "summary", "final"} <= set(report)
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"teacher_fp32", "teacher_float16", "teacher_dynamic", "teacher_int8",
                         "student_onnx_fp32", "student_onnx_int8", "swap_int8", "qat_int8", "prune_auto"}
    for row in rows.values():
        assert RESULT_KEYS <= set(row) and set(row["latency_ms"]) == {"p50", "p90", "mean"}
        assert (out / row["path"]).is_file()
    assert {rows[n]["format"] for n in ("student_onnx_fp32", "student_onnx_int8")} == {"onnx"}
    assert [rows[n]["quantization"] for n in ("teacher_float16", "teacher_dynamic", "student_onnx_int8")] == \
        ["float16", "dynamic", "int8"]
    base, final = rows["teacher_fp32"], rows["qat_int8"]
    summary = report["summary"]
    assert (summary["baseline"], summary["final"]) == ("teacher_fp32", "qat_int8")
    assert summary["gzip_ratio"] == pytest.approx(base["gzip_bytes"] / final["gzip_bytes"])
    assert summary["accuracy_drop_pp"] == pytest.approx(100 * (base["accuracy"] - final["accuracy"]))
    assert summary["latency_ratio"] == pytest.approx(base["latency_ms"]["p50"] / final["latency_ms"]["p50"])


def test_pqat_keeps_the_pruned_zeros_into_the_final_model(smoke_run):
    _, report = smoke_run
    final = {name.removeprefix("quant_"): s for name, s in report["final"]["layer_sparsity"].items()}
    prune = next(s for s in report["stages"] if s["kind"] == "prune")
    assert prune["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    per_layer = prune["metrics"]["per_layer"]  # erk: each layer its own share, 0.5 overall
    assert max(per_layer.values()) > 0.5 and all(final[name] >= s - 0.01 for name, s in per_layer.items())


def test_plots_are_written_and_linked(smoke_run):
    out, _ = smoke_run
    for plot in PLOTS:
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (out / "report.md").read_text()
    assert "![accuracy vs size and latency](plots/tradeoff.png)" in markdown


@pytest.mark.parametrize("name", ["qat_int8", "student_onnx_int8"])
def test_report_accuracy_is_what_bench_measures_on_the_same_file(smoke_run, tmp_path, name):
    out, report = smoke_run
    row = next(r for r in report["results"] if r["name"] == name)
    assert main(["bench", str(out / row["path"]), "--data", "digits", "--runs", "2", "--warmup", "0",
                 "--json", str(tmp_path / "b.json")]) == 0
    (measured,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert measured["accuracy"] == row["accuracy"]
    if name == report["summary"]["final"]:
        final = report["final"]
        assert final["accuracy"] == measured["accuracy"]
        assert sum(map(sum, final["confusion_matrix"])) == report["dataset"]["n_test"]


def test_each_stage_learns_from_the_teacher_it_names(smoke_run):
    _, report = smoke_run
    distill = {s["kind"]: (s["metrics"].get("fine_tune") or {}).get("distill") for s in report["stages"]
               if s["kind"] in ("prune", "cluster", "qat")}
    assert distill["prune"] and distill["cluster"]  # distill_from: teacher (a model of the run), and input
    assert distill["qat"] is None  # QAT's default: no teacher


def test_auto_conversion_keeps_a_measured_mode_and_is_benched(smoke_run):
    _, report = smoke_run
    stage = next(s for s in report["stages"] if s["name"] == "convert_auto")
    auto = stage["metrics"]["prune_auto"]["auto"]
    candidates = {c["name"]: c for c in auto["candidates"]}
    assert auto["chosen"] in candidates and candidates[auto["chosen"]]["within"] == auto["met"]
    if auto["met"]:  # the fastest of those within the stage's 2 pp
        assert auto["chosen"] == min((c for c in candidates.values() if c["within"]), key=lambda c: c["p50_ms"])["name"]
    assert "prune_auto" in {r["name"] for r in report["results"]}
