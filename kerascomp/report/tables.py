"""Markdown tables of benchmark results, scans and quantization errors, and the numbers behind the figures."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from kerascomp.tasks import CLASSIFICATION, SEGMENTATION, per_class_iou

__all__ = ["results_table", "kernel_table", "scored", "classification_details", "segmentation_details", "sensitivity_table",
           "layer_error_table"]

EXAMPLE_MASKS = 4  # test images a segmenter's report shows beside their true and predicted masks
EXAMPLE_SIDE = 96  # pixels: larger examples are subsampled to keep report.json small

_COLUMNS = ("name", "format", "quantization", "threads", "params", "nonzero", "size KB", "gzip KB", "MACs",
            "peak act. KB", "accuracy", "p50 ms", "p90 ms", "GMAC/s")


def results_table(results: Sequence[dict]) -> str:
    """A Markdown table with one row per bench result (its metric column: accuracy, or a regressor's MAE)."""
    columns = [_metric(results[0])[1] if c == "accuracy" and results else c for c in _COLUMNS]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        cells = (
            r["name"], r["format"], r["quantization"], r["threads"], f"{r['params']:,}", f"{r['nonzero_params']:,}",
            f"{r['size_bytes'] / 1024:.1f}", f"{r['gzip_bytes'] / 1024:.1f}", _maybe(r.get("macs"), "{:,}"),
            _maybe(r.get("peak_activation_bytes"), "{:.1f}", 1 / 1024), f"{_metric(r)[0]:.4f}",
            f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p90']:.3f}", _maybe(r.get("macs_per_s"), "{:.2f}", 1e-9),
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _metric(row: dict) -> tuple[float, str, bool]:
    """A bench row's test metric, its name and whether higher is better (rows before ``metric``: accuracy)."""
    metric = row.get("metric") or {"value": row["accuracy"], "name": "accuracy", "higher_is_better": True}
    return metric["value"], metric["name"], metric["higher_is_better"]


def _maybe(value, spec: str, scale: float = 1.0) -> str:
    """A number formatted for a table, or "-" where the runtime gives none (MACs of a .keras or .onnx file)."""
    return "-" if value is None else spec.format(value * scale if scale != 1.0 else value)


def kernel_table(results: Sequence[dict]) -> str:
    """Where each LiteRT file's nodes run: XNNPACK partitions, delegated nodes, and the ops left outside.

    Empty when no result carries a kernel record (no ``.tflite`` benchmarked).
    """
    rows = [r for r in results if r.get("kernels")]
    if not rows:
        return ""
    lines = ["| artifact | threads | kernel path | XNNPACK partitions | nodes delegated | ops outside XNNPACK |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        k = r["kernels"]
        outside = ", ".join(f"{op} ×{n}" for op, n in sorted(k["outside_ops"].items())) or "none"
        lines.append(f"| {r['name']} | {r['threads']} | {k['path']} | {k['partitions']} | "
                     f"{k['delegated_nodes']}/{k['nodes']} | {outside} |")
    return "\n".join(lines)


def scored(data, outputs) -> dict:
    """A model's test ``outputs`` on ``data`` (a :class:`~kerascomp.data.Dataset`) as a report shows them: a
    classifier's confusion matrix and per-class precision/recall, a segmenter's IoU per class and a few test
    images with their true and predicted masks, a regressor's predictions beside the true targets. The one
    place that chooses by task; :func:`kerascomp.report.plot_scored` draws what it returns."""
    task = data.task
    if task == CLASSIFICATION:
        return classification_details(data.y_test, outputs.argmax(1), data.class_names)
    details = {"metric": task.metric, "value": task.score(outputs, data.y_test)}
    if task == SEGMENTATION:
        return {**details, **segmentation_details(data.x_test, data.y_test, outputs.argmax(-1), data.class_names)}
    return {**details, "predicted": outputs.reshape(len(outputs), -1)[:, 0].tolist(),
            "true": data.y_test.reshape(len(outputs), -1)[:, 0].tolist()}


def classification_details(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Confusion matrix (rows: true class) and per-class precision and recall, as plain lists for JSON."""
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    hits = np.diag(matrix)
    return {
        "class_names": list(class_names),
        "accuracy": float(hits.sum() / max(matrix.sum(), 1)),
        "confusion_matrix": matrix.tolist(),
        "precision": (hits / np.maximum(matrix.sum(axis=0), 1)).tolist(),
        "recall": (hits / np.maximum(matrix.sum(axis=1), 1)).tolist(),
    }


def segmentation_details(x, y_true, y_pred, class_names: Sequence[str]) -> dict:
    """IoU per class over the split and the first few images with their true and predicted masks (subsampled to
    at most :data:`EXAMPLE_SIDE` pixels a side), as plain lists for JSON."""
    iou, _ = per_class_iou(y_pred, y_true, len(class_names))
    step = max(1, -(-max(np.shape(y_true)[1:3]) // EXAMPLE_SIDE))
    pick = slice(None, EXAMPLE_MASKS)
    images = np.asarray(x)[pick, ::step, ::step]
    low, high = float(images.min()), float(images.max())
    return {
        "class_names": list(class_names),
        "iou": [None if np.isnan(v) else float(v) for v in iou],
        "examples": {"images": np.round(255 * (images - low) / max(high - low, 1e-12)).astype(int).tolist(),
                     "true": np.asarray(y_true)[pick, ::step, ::step].tolist(),
                     "predicted": np.asarray(y_pred)[pick, ::step, ::step].tolist()},
    }


def sensitivity_table(scan: Mapping) -> str:
    """Markdown of a pruning sensitivity scan: validation drop (pp) per layer and sparsity, most sensitive first."""
    by_name = {layer["name"]: layer for layer in scan["layers"]}
    header = ["layer", "kind", "weights", *(f"drop @{s:g}" for s in scan["sparsities"])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in scan["ranking"]:
        layer = by_name[name]
        lines.append(f"| {name} | {layer['kind']} | {layer['weights']:,} | "
                     + " | ".join(f"{d:+.2f}" for d in layer["drop_pp"]) + " |")
    lines.append(f"\nbaseline validation accuracy {scan['baseline']['val_accuracy']:.4f} on {scan['n_val']} examples "
                 f"(one example = {100 / scan['n_val']:.2f} pp)")
    return "\n".join(lines)


def layer_error_table(rows: Sequence[dict], worst: int | None = None) -> str:
    """Markdown of per-layer quantization error (``litert_quantizer.layer_errors``), the ``worst`` lowest SNR first."""
    shown = sorted(rows, key=lambda row: row["snr_db"])[:worst] if worst else rows
    lines = ["| layer | SNR (dB) | cosine |", "|---|---|---|"]
    lines += [f"| {_short(row['layer'])}{' (output)' if row['output'] else ''} | {row['snr_db']:.1f} | "
              f"{row['cosine']:.4f} |" for row in shown]
    return "\n".join(lines)


def _short(tensor: str) -> str:
    """A TFLite tensor's first name: fused tensors list every op they fused, separated by ';'."""
    return tensor.split(";")[0]
