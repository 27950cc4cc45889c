import json
import shutil

import numpy as np
import pytest
from PIL import Image

from kerascomp.bench import bench
from kerascomp.cli import main
from kerascomp.compress.shrink import analyse, cost
from kerascomp.export import export

RESULT_KEYS = {"name", "path", "format", "quantization", "params", "nonzero_params", "size_bytes", "gzip_bytes",
               "accuracy", "latency_ms", "batch_size", "threads", "macs", "peak_activation_bytes", "macs_per_s"}


@pytest.fixture(scope="module")
def artifacts(digits, digits_model, tmp_path_factory):
    source, model = digits_model
    folder = tmp_path_factory.mktemp("artifacts")
    fp32, int8 = folder / "cnn_fp32.tflite", folder / "cnn_int8.tflite"
    export(model, fp32, data=digits, source=source)
    export(model, int8, quantize="int8", data=digits, source=source)
    return source, fp32, int8


def test_bench_rows_follow_the_contract_and_measure_each_artifact(digits, digits_model, artifacts):
    source, fp32, int8 = artifacts
    _, model = digits_model
    document = bench([source, fp32, int8], digits, runs=20, warmup=2)
    assert document["dataset"] == {"name": "digits", "n_test": 450}
    assert {"cpu", "threads"} <= document["machine"].keys()
    keras_row, fp32_row, int8_row = document["results"]
    for row in document["results"]:
        assert RESULT_KEYS <= row.keys()
        assert 0 < row["latency_ms"]["p50"] <= row["latency_ms"]["p90"]
        assert 0 < row["gzip_bytes"] < row["size_bytes"] * 1.1 and row["nonzero_params"] <= row["params"]
    assert [r["format"] for r in document["results"]] == ["keras", "tflite", "tflite"]
    assert [r["quantization"] for r in document["results"]] == ["none", "none", "int8"]
    expected = float((model.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean())
    assert keras_row["accuracy"] == pytest.approx(expected)
    assert fp32_row["accuracy"] == pytest.approx(expected, abs=1 / 450)
    assert abs(int8_row["accuracy"] - expected) <= 0.02
    assert int8_row["gzip_bytes"] < 0.5 * fp32_row["gzip_bytes"]
    assert keras_row["kernels"] is None
    for row in (fp32_row, int8_row):  # the kernel record agrees with the path and counts every node once
        k = row["kernels"]
        assert k["path"] == row["kernel_path"] and sum(k["ops"].values()) == k["nodes"] >= k["delegated_nodes"]
        assert sum(k["outside_ops"].values()) == k["nodes"] - k["delegated_nodes"]
        assert (k["path"] == "xnnpack") == (k["partitions"] >= 1 and not k["outside_ops"])
    assert "CONV_2D" in fp32_row["kernels"]["ops"] and "FULLY_CONNECTED" in fp32_row["kernels"]["ops"]
    # the device footprint: the same work in both files, a quarter of the activation bytes in int8, MAC/s at p50
    assert fp32_row["macs"] == int8_row["macs"] == cost(analyse(model))["macs"]
    assert int8_row["peak_activation_bytes"] * 4 == fp32_row["peak_activation_bytes"]
    assert fp32_row["macs_per_s"] == pytest.approx(fp32_row["macs"] / (fp32_row["latency_ms"]["p50"] / 1e3))
    assert keras_row["macs"] is None and keras_row["macs_per_s"] is None


def test_cli_convert_then_bench_writes_json_and_plot(capsys, tmp_path, digits_model):
    source, _ = digits_model
    out = tmp_path / "m_int8.tflite"
    assert main(["convert", str(source), "--quantize", "int8", "--data", "digits", "--int8-io", "--out", str(out)]) == 0
    assert "top-1 agreement" in capsys.readouterr().out
    report, plot = tmp_path / "b.json", tmp_path / "b.png"
    code = main(["bench", str(source), str(out), "--data", "digits", "--threads", "1,2", "--runs", "10",
                 "--json", str(report), "--plot", str(plot)])
    assert code == 0
    document = json.loads(report.read_text())
    assert [(r["format"], r["threads"]) for r in document["results"]][1:] == [("tflite", 1), ("tflite", 2)]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| name |" in printed and "Where the nodes run:" in printed and "| m_int8 | 2 |" in printed


def test_convert_writes_beside_its_input_by_default(capsys, tmp_path, monkeypatch, digits_model):
    """As every technique does (it wrote into ./tflite_models/ while prune wrote beside its input)."""
    source = shutil.copy(digits_model[0], tmp_path / "cnn.keras")
    shutil.copy(f"{digits_model[0]}.json", tmp_path / "cnn.keras.json")
    monkeypatch.chdir(tmp_path.parent)
    assert main(["convert", str(source)]) == 0
    assert (tmp_path / "cnn_fp32.tflite").is_file() and (tmp_path / "cnn_fp32.tflite.json").is_file()


def test_tflite_without_sidecar_is_benchmarked_with_a_warning(tmp_path, digits, artifacts):
    _, fp32, _ = artifacts
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(fp32.read_bytes())
    with pytest.warns(UserWarning, match="no sidecar"):
        row, = bench([bare], digits, runs=5, warmup=1)["results"]
    assert row["accuracy"] > 0.8


@pytest.mark.parametrize("setup, message", [
    (lambda d, fp32: d.joinpath("t.tflite").write_bytes(fp32.read_bytes()[:300]) and d / "t.tflite", "Error:"),
    (lambda d, fp32: d.joinpath("t.tflite").write_text("hello") and d / "t.tflite", "Error:"),
    (lambda d, fp32: d / "missing.tflite", "not found"),
    (lambda d, fp32: d.joinpath("m.txt").write_text("x") and d / "m.txt", "use .keras, .tflite or .onnx"),
])
def test_bench_bad_artifacts_give_one_error_line(capsys, tmp_path, artifacts, setup, message):
    path = setup(tmp_path, artifacts[1])
    json_path = tmp_path / "out.json"
    assert main(["bench", str(path), "--data", "digits", "--json", str(json_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:") and message in err[0]
    assert not json_path.exists()


def test_bench_shape_mismatch_is_an_error(capsys, tmp_path, artifacts, image_npz):
    assert main(["bench", str(artifacts[1]), "--data", str(image_npz)]) == 1
    assert "expects inputs (8, 8, 1)" in capsys.readouterr().err


def test_convert_of_a_non_model_file_is_an_error(capsys, tmp_path):
    bad = tmp_path / "m.keras"
    bad.write_bytes(b"not a zip")
    assert main(["convert", str(bad), "--out", str(tmp_path / "m.tflite")]) == 1
    assert capsys.readouterr().err.startswith("Error: cannot load")


def test_predict_classifies_a_png_with_sidecar_labels(capsys, tmp_path, digits, artifacts):
    from sklearn.datasets import load_digits

    raw = load_digits().images  # 0..16, the raw scale the sidecar's scaling expects
    index = int(np.flatnonzero(load_digits().target == 3)[0])
    png = tmp_path / "three.png"
    Image.fromarray(raw[index].astype(np.uint8)).save(png)
    assert main(["predict", str(artifacts[2]), str(png), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    label, probability = line.split(": ")[1].split(", ")[0].split()
    assert label == "3" and 0.5 < float(probability) <= 1.0


def test_labels_of_nearby_points_are_stacked_and_far_ones_stay_put():
    """qat_int8 sat on prune_int8 and teacher_fp32 on teacher_float16 in the trade-off plot."""
    from kerascomp.report import label_lifts

    points = [(6.5, 98.9), (6.7, 98.9), (200.0, 98.9), (6.6, 99.6)]
    names = ["prune_int8", "qat_int8", "teacher_fp32", "student_int8"]
    assert label_lifts(points, names) == [0, 1, 0, 0]
