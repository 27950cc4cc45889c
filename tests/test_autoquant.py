"""``convert --quantize auto``: every mode measured here, the best within the budget kept, nothing half-written."""

import json

import pytest

from kerascomp.budget import choose_within
from kerascomp.cli import main
from kerascomp.runtime import load


def _row(val, gzip, p50, size=None, macs=None, p90=None):
    return {"val_accuracy": val, "gzip_bytes": gzip, "size_bytes": size or 2 * gzip, "macs": macs,
            "latency_ms": {"p50": p50, "p90": p90 or p50 * 1.01}}


def test_choose_within_takes_the_fastest_or_smallest_that_holds_the_budget():
    rows = {"none": _row(0.99, 1000, 0.5), "int8": _row(0.97, 250, 0.2), "dynamic": _row(0.985, 260, 0.3),
            "float16": _row(0.99, 500, 0.4)}
    assert choose_within(rows, 0.99, 1.0, "latency")["chosen"] == "dynamic"  # int8 is faster but loses 2 pp
    assert choose_within(rows, 0.99, 1.0, "size")["chosen"] == "dynamic"
    assert choose_within(rows, 0.99, 3.0, "latency")["chosen"] == "int8"
    assert choose_within(rows, 0.99, 0.0, "size")["chosen"] == "float16"
    none = choose_within(rows, 1.0, 0.5, "size")
    assert none["chosen"] is None and not any(c["within"] for c in none["candidates"])


def test_latencies_within_the_timing_noise_tie_and_the_smaller_file_wins():
    """Every candidate of a small model ran at 0.002 ms and float16 was 'fastest': noise decided."""
    rows = {"float16": _row(0.99, 500, 0.0020, p90=0.0023), "int8": _row(0.99, 250, 0.0021, p90=0.0022),
            "none": _row(0.99, 1000, 0.0031, p90=0.0032)}
    choice = choose_within(rows, 0.99, 1.0, "latency")
    assert choice["chosen"] == "int8" and choice["tied"] == ["float16", "int8"]
    rows["int8"] = _row(0.99, 250, 0.0030, p90=0.0031)  # clearly slower than float16: no tie
    assert choose_within(rows, 0.99, 1.0, "latency") == {**choose_within(rows, 0.99, 1.0, "latency"),
                                                         "chosen": "float16", "tied": []}


def test_the_device_footprint_objectives_choose_by_file_bytes_or_macs():
    """gzip favours a file of zeros; the file the device maps and the work per call do not."""
    rows = {"pruned": _row(0.99, 100, 0.3, size=1000, macs=500), "shrunk": _row(0.99, 300, 0.2, size=400, macs=200),
            "keras": _row(0.99, 50, 0.9, size=90, macs=None)}
    assert choose_within(rows, 0.99, 1.0, "size")["chosen"] == "keras"
    assert choose_within(rows, 0.99, 1.0, "bytes")["chosen"] == "keras"
    assert choose_within(rows, 0.99, 1.0, "macs")["chosen"] == "shrunk"  # a row without MACs never wins on MACs
    del rows["keras"]
    assert choose_within(rows, 0.99, 1.0, "bytes")["chosen"] == "shrunk"


def test_cli_auto_keeps_the_fastest_mode_within_the_budget_with_its_sidecar(capsys, tmp_path, digits_model):
    source, _ = digits_model
    out, report = tmp_path / "m_auto.tflite", tmp_path / "auto.json"
    code = main(["convert", str(source), "--quantize", "auto", "--data", "digits", "--out", str(out),
                 "--json", str(report)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(report.read_text())
    candidates = {c["name"]: c for c in result["candidates"]}
    assert set(candidates) | set(result["skipped"]) == {"none", "float16", "dynamic", "int8",
                                                        "dynamic@litert-quantizer", "int8@litert-quantizer"}
    within = [c for c in candidates.values() if c["within"]]
    fastest = min(within, key=lambda c: c["p50_ms"])["name"]
    if result["tied"]:  # p50s within the timing noise of the fastest: the smallest file of them wins
        assert fastest in result["tied"] and result["chosen"] == min(
            result["tied"], key=lambda name: (candidates[name]["gzip_bytes"], candidates[name]["p50_ms"]))
    else:
        assert result["chosen"] == fastest
    assert all(c["within"] == (c["val_drop_pp"] <= 1.0) for c in candidates.values())
    meta = load(out).meta  # the sidecar moved with the file
    assert "@".join([meta["quantization"]] + ([meta["backend"]] if meta["backend"] != "converter" else [])) \
        == result["chosen"]
    assert f"auto: {result['chosen']} is the fastest" in printed and "| candidate |" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.json", "m_auto.tflite", "m_auto.tflite.json"]


@pytest.mark.parametrize("args, code, message", [
    (["--quantize", "auto", "--max-drop", "-100"], 1, "no candidate holds --max-drop -100"),
    (["--quantize", "int8", "--objective", "size"], 2, "apply to --quantize auto"),
])  # auto without --data: refused before TensorFlow loads (test_cli_commands.BAD_INPUT)
def test_auto_refusals_write_nothing(capsys, tmp_path, digits_model, args, code, message):
    source, _ = digits_model
    assert main(["convert", str(source), *args, "--data", "digits", "--out", str(tmp_path / "m.tflite")]) == code
    error = capsys.readouterr().err
    assert message in error and list(tmp_path.iterdir()) == []
