"""Dense prediction: masks as targets, mean IoU as the metric, a U-Net from training to a verified LiteRT file."""

import json
from pathlib import Path

import numpy as np
import pytest

from kerascomp import models
from kerascomp.cli import main
from kerascomp.data import Dataset, load_data
from kerascomp.data.shapes import make_shapes
from kerascomp.errors import DataError
from kerascomp.tasks import SEGMENTATION, per_class_iou


def test_mean_iou_counts_each_class_over_the_split_and_skips_classes_that_never_occur():
    y = np.array([[[0, 0], [1, 1]], [[0, 1], [1, 1]]])
    predicted = np.array([[[0, 1], [1, 1]], [[0, 1], [1, 0]]])
    iou, mean = per_class_iou(predicted, y, 3)  # class 0: 2 hits of 4 in the union; class 1: 4 of 6; class 2: none
    assert iou[:2] == pytest.approx([2 / 4, 4 / 6]) and np.isnan(iou[2]) and mean == pytest.approx((0.5 + 4 / 6) / 2)
    logits = np.eye(3)[predicted]
    assert SEGMENTATION.score(logits, y) == pytest.approx(mean)
    assert SEGMENTATION.score(np.eye(3)[y], y) == 1.0 and SEGMENTATION.higher_is_better
    assert SEGMENTATION.number(0.9452) == "94.52%" and SEGMENTATION.amount(-0.4, signed=True) == "-0.40 pp"


def test_the_embedded_shapes_are_the_same_everywhere_and_their_masks_cover_the_bright_shapes():
    data = load_data("shapes")
    again = load_data("shapes")
    assert data.task == SEGMENTATION and data.class_names == ("background", "square", "disc", "triangle")
    assert data.input_shape == (32, 32, 1) and data.output_shape == (32, 32, 4)
    assert np.array_equal(data.x_train, again.x_train) and np.array_equal(data.y_test, again.y_test)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 1200
    shape, background = data.x_train[data.y_train > 0], data.x_train[data.y_train == 0]
    assert shape.mean() > background.mean() + 0.3  # shapes are drawn brighter than the shaded background
    assert set(np.unique(data.y_test)) == {0, 1, 2, 3}
    assert load_data("shapes", seed=1).y_test.tolist() != data.y_test.tolist()  # the seed splits, not draws


@pytest.mark.parametrize("make, message", [
    (lambda x, y: Dataset.from_arrays(x, y[:, :4, :4]), "images are 16x16 but masks 4x4"),
    (lambda x, y: Dataset.from_arrays(x, y - 1), "negative labels"),
    (lambda x, y: Dataset.from_arrays(x, y + 0.5, task="segmentation"), "integer class labels per pixel"),
    (lambda x, y: Dataset.from_arrays(x, y[..., None, None], task="segmentation"), "must be masks"),
    (lambda x, y: Dataset.from_arrays(x, y + 0.5), "regression targets"),
    (lambda x, y: load_data("shapes", task="regression"), "'shapes' is segmentation, not regression"),
])
def test_masks_that_do_not_fit_are_refused_in_one_line(make, message):
    x, y = make_shapes(60, 16)
    with pytest.raises(DataError, match=message) as error:
        make(x, y)
    assert "\n" not in str(error.value)


def test_a_model_of_another_task_is_refused_before_training():
    x, y = make_shapes(60, 16)
    data = Dataset.from_arrays(x, y)
    classifier = models.build("cnn", data.input_shape, data.num_outputs, width=4)
    with pytest.raises(DataError, match=r"is segmentation \(outputs \(16, 16, 4\) per example\) but the model "
                                        r"outputs \(4,\)"):
        data.check_fits(classifier.input_shape[1:], classifier.output_shape[1:])
    narrow = models.build("unet", data.input_shape, 3, width=4, depth=1)
    with pytest.raises(DataError, match="has 4 classes per pixel but the model outputs 3"):
        data.check_fits(narrow.input_shape[1:], narrow.output_shape[1:])


@pytest.mark.slow  # about a minute: the suite's quick run has the pipeline below, which shares every stage but qat
def test_a_segmenter_goes_through_prune_qat_auto_convert_bench_and_predict_in_mean_iou(tmp_path, capsys):
    x, y = make_shapes(360, 16)
    np.savez(tmp_path / "shapes.npz", x=x, y=y, classes=np.array(["bg", "square", "disc", "triangle"]))
    data = ["--data", str(tmp_path / "shapes.npz")]
    assert main(["train", "--model", "unet", "--model-arg", "width=8", "--model-arg", "depth=1", *data,
                 "--epochs", "12", "--batch-size", "16", "--out", str(tmp_path / "t.keras")]) == 0
    trained = capsys.readouterr().out
    assert "4 classes per pixel" in trained and "val_mean_iou" in trained
    assert main(["prune", str(tmp_path / "t.keras"), *data, "--max-drop", "20", "--epochs", "1",
                 "--out", str(tmp_path / "p.keras"), "--json", str(tmp_path / "p.json")]) == 0
    assert "val mean_iou" in capsys.readouterr().out
    pruned = json.loads((tmp_path / "p.json").read_text())
    assert pruned["budget"]["metric"] == "mean_iou" and pruned["budget"]["unit"] == "pp"
    assert pruned["search"]["chosen"] and pruned["test_mean_iou"] > 0.4  # better than all background (about 0.22)
    assert main(["qat", str(tmp_path / "p.keras"), *data, "--preserve", "sparsity", "--epochs", "1",
                 "--out", str(tmp_path / "q.keras")]) == 0
    assert main(["convert", str(tmp_path / "q.keras"), *data, "--quantize", "auto", "--max-drop", "20",
                 "--out", str(tmp_path / "q.tflite")]) == 0
    assert "| candidate | val mean_iou | val drop (pp) |" in capsys.readouterr().out
    sidecar = json.loads((tmp_path / "q.tflite.json").read_text())
    assert sidecar["task"] == "segmentation" and sidecar["output"] == "logits"
    assert sidecar["verification"]["top1_agreement"] > 0.95  # of pixels: the argmax per pixel is the prediction
    assert main(["bench", str(tmp_path / "t.keras"), str(tmp_path / "q.tflite"), *data, "--runs", "3",
                 "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [r["metric"]["name"] for r in rows] == ["mean_iou"] * 2 and all(r["metric"]["higher_is_better"]
                                                                          for r in rows)
    assert rows[0]["metric"]["value"] == pytest.approx(json.loads((tmp_path / "p.json").read_text())
                                                       ["baseline"]["test_mean_iou"], rel=1e-4)
    assert rows[1]["accuracy"] is None and rows[1]["val_mean_iou"] > 0.4
    np.savez(tmp_path / "one.npz", x=x[:1])
    assert main(["predict", str(tmp_path / "q.tflite"), str(tmp_path / "one.npz")]) == 0
    shares = capsys.readouterr().out.strip().split(": ")[1].split(", ")
    assert shares[0].startswith("bg ") and sum(float(s.split()[1].rstrip("%")) for s in shares) == pytest.approx(
        100, abs=0.5)


def test_the_segmentation_pipeline_chooses_and_reports_in_mean_iou_with_masks(tmp_path, capsys, small_pipeline):
    report, printed, out = small_pipeline(
        "{spec: shapes}", 5.0, "{model: unet, args: {width: 4, depth: 1}, train: {epochs: 3, batch_size: 32}}",
        "{sparsity: 0.5, epochs: 1}")
    assert report["dataset"]["task"] == "segmentation" and report["choice"]["metric"] == "mean_iou"
    assert report["summary"]["metric"] == "mean_iou" and "pp test mean_iou drop" in printed
    final = report["final"]
    assert len(final["iou"]) == 4 and np.array(final["examples"]["true"]).shape == (4, 32, 32)
    markdown = (out / "report.md").read_text()
    assert "| artifact | val mean_iou | val drop (pp) |" in markdown and "plots/masks.png" in markdown
    assert (out / "plots" / "masks.png").stat().st_size > 10_000
    shipped = out / report["summary"]["path"]
    sidecar = json.loads(Path(f"{shipped}.json").read_text())
    assert sidecar["task"] == "segmentation" and sidecar["output"] == "logits"
    assert sidecar["verification"]["top1_agreement"] > 0.9  # of pixels: a pixel's argmax is its prediction
    np.savez(tmp_path / "one.npz", x=make_shapes(1)[0])
    assert main(["predict", str(shipped), str(tmp_path / "one.npz")]) == 0
    shares = capsys.readouterr().out.strip().split(": ")[1].split(", ")  # the share of the image per class
    assert shares[0].startswith("background ")
    assert sum(float(s.split()[1].rstrip("%")) for s in shares) == pytest.approx(100, abs=0.5)
