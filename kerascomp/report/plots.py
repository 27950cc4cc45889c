"""matplotlib figures of benchmark results and technique runs (Agg backend, files only)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kerascomp.files import write_bytes
from kerascomp.report.tables import _metric, _short, scored
from kerascomp.tasks import METRICS, task_of_metric

__all__ = ["plot_tradeoff", "label_lifts", "pareto_front", "pyplot", "save_figure", "plot_training_curves",
           "plot_epoch_times", "plot_confusion_matrix", "plot_sweep", "plot_swap", "plot_search", "plot_predictions",
           "plot_masks", "plot_sensitivity",
           "plot_layer_errors", "technique_plots"]


def plot_tradeoff(results: Sequence[dict], path: str | os.PathLike, title: str = "", chosen: str | None = None) -> None:
    """Accuracy vs gzip size and vs p50 latency, one labelled point per artifact (labels that would sit on each
    other stacked, see :func:`label_lifts`), ``chosen`` starred."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = ((axes[0], lambda r: r["gzip_bytes"] / 1024, "gzip size (KB, log)"),
              (axes[1], lambda r: r["latency_ms"]["p50"], "latency p50, batch 1 (ms, log)"))
    _, metric, higher = _metric(results[0])
    sign = 1 if higher else -1  # the front and "up is better" read a lower error as a higher point
    scale = 100 if task_of_metric(metric).percent else 1
    for ax, x_of, label in panels:
        points = [(x_of(r), sign * scale * _metric(r)[0]) for r in results]
        first_chosen = next((r for r in results if r["name"] == chosen), None)
        names = [(r["name"] if r["threads"] == 1 else f"{r['name']} ({r['threads']}t)")
                 + (" (chosen)" if r is first_chosen else "") for r in results]
        for r, point, name, lift in zip(results, points, names, label_lifts(points, names)):
            mine = r is first_chosen
            ax.scatter(*point, s=160 if mine else 40, marker="*" if mine else "o", c="tab:red" if mine else None)
            ax.annotate(name, point, textcoords="offset points", xytext=(5, 4 + 9 * lift), fontsize=8,
                        fontweight="bold" if mine else "normal")
        front = sorted(points[i] for i in pareto_front(points))
        if len(front) > 1:
            ax.step(*zip(*front), where="post", color="tab:red", alpha=0.6, lw=1, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric} of the file" + (" (%)" if scale == 100 else "") + ("" if higher else " (negated)"))
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or f"{metric} vs size and latency (up and left is better; the choice reads validation {metric})")
    save_figure(fig, path)


def label_lifts(points: Sequence[tuple[float, float]], names: Sequence[str], near: float = 0.05,
                char: float = 0.013) -> list[int]:
    """How many label heights each label goes up so that it overlaps no label placed before it.

    Positions are fractions of the axes as drawn (log x, linear y, 0.85 of the
    span for the margins); a label spans ``char`` of the width per character.
    """
    xs, ys = [math.log10(max(x, 1e-12)) for x, _ in points], [y for _, y in points]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float, float, int]] = []  # left, right, height, lift
    for x, y, name in zip(xs, ys, names):
        left, v = 0.85 * (x - min(xs)) / dx, 0.85 * (y - min(ys)) / dy
        taken = {k for pl, pr, pv, k in placed if pl < left + char * len(name) and left < pr and abs(pv - v) < near}
        placed.append((left, left + char * len(name), v, next(k for k in range(len(points) + 1) if k not in taken)))
    return [k for *_, k in placed]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher)."""
    return [i for i, (cost, acc) in enumerate(points)
            if not any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)]


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures are files, never windows (imported on use: it loads slowly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write ``fig`` to ``path`` atomically, then free it (drawn in memory first, so a full disk is told the
    figure's size)."""
    image = io.BytesIO()
    fig.savefig(image, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    pyplot().close(fig)
    write_bytes(path, image.getvalue())


def plot_training_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike,
                         title: str = "") -> None:
    """The metric (accuracy, a regressor's MAE, a segmenter's mean IoU) and loss per epoch (solid: training,
    dashed: validation), one colour per run.

    ``histories`` maps a run name to a Keras ``History.history`` dict. Losses of
    different objectives (distillation vs cross-entropy) share a panel but are
    not comparable in value; the metrics are.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    metric = next((k for h in histories.values() for k in h if not k.startswith("val_") and k.endswith(METRICS)),
                  "accuracy")
    for (name, history), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        for ax, key in zip(axes, (metric, "loss")):
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + key)
                if values:
                    ax.plot(range(1, len(values) + 1), values, style, color=colour, label=f"{name} {prefix or 'train_'}{key}")
    for ax, key in zip(axes, (metric, "loss")):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "training curves")
    save_figure(fig, path)


def plot_epoch_times(times: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str = "") -> None:
    """Wall seconds of every epoch per run (the first includes tracing, so the median is marked too)."""
    import statistics

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, seconds in times.items():
        line, = ax.plot(range(1, len(seconds) + 1), seconds, marker="o", ms=3, label=name)
        ax.axhline(statistics.median(seconds), color=line.get_color(), ls=":", lw=1)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds (dotted: median)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "time per epoch")
    save_figure(fig, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | os.PathLike,
                          title: str = "") -> None:
    """Counts of true (rows) vs predicted (columns) classes, as :func:`classification_details` gives them."""
    plt = pyplot()
    n = len(class_names)
    matrix = np.asarray(matrix, dtype=int)
    size = min(4 + 0.35 * n, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), constrained_layout=True)
    image = ax.imshow(matrix, cmap="Blues")
    if n <= 20:
        for i, j in np.ndindex(matrix.shape):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0, fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, shrink=0.8)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title or 'confusion matrix'} (accuracy {accuracy:.2%})")
    save_figure(fig, path)


def plot_sweep(points: Sequence[dict], path: str | os.PathLike, title: str = "",
               teacher_accuracy: float | None = None) -> None:
    """Accuracy vs student size, and vs temperature and alpha, from sweep points.

    Each point has ``student_params``, ``student_accuracy``, ``scratch_accuracy``
    (or None), ``temperature`` and ``alpha``. The first panel answers "how much
    smaller can the student be?": the best distilled accuracy per size next to
    the same student from scratch (and the teacher as a line). A temperature or
    alpha panel appears when the sweep varied it, one line per student size,
    each value averaged over the other settings.
    """
    plt = pyplot()
    sizes = sorted({p["student_params"] for p in points})
    varied = [k for k in ("temperature", "alpha") if len({p[k] for p in points}) > 1]
    fig, axes = plt.subplots(1, 1 + len(varied), figsize=(5.5 * (1 + len(varied)), 4.2), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    at_size = {s: [p for p in points if p["student_params"] == s] for s in sizes}
    axes[0].plot(sizes, [100 * max(p["student_accuracy"] for p in at_size[s]) for s in sizes], "o-",
                 label="distilled (best setting)")
    scratch = [(s, at_size[s][0]["scratch_accuracy"]) for s in sizes if at_size[s][0].get("scratch_accuracy") is not None]
    if scratch:
        axes[0].plot([s for s, _ in scratch], [100 * a for _, a in scratch], "s--", label="from scratch")
    if teacher_accuracy is not None:
        axes[0].axhline(100 * teacher_accuracy, color="grey", ls=":", label="teacher")
    axes[0].set_xscale("log")
    axes[0].set_xticks(sizes, [f"{s:,}" for s in sizes], rotation=30, fontsize=8)
    axes[0].minorticks_off()
    axes[0].set_xlabel("student parameters (log)")
    for ax, key in zip(axes[1:], varied):
        for size in sizes:
            values = sorted({p[key] for p in at_size[size]})
            means = [np.mean([p["student_accuracy"] for p in at_size[size] if p[key] == v]) for v in values]
            ax.plot(values, [100 * m for m in means], "o-", label=f"{size:,} params")
        ax.set_xlabel(key)
        ax.set_title("distilled, mean over the other settings", fontsize=9)
    for ax in axes:
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "distillation sweep: how much smaller can the student be?")
    save_figure(fig, path)

def plot_swap(metrics: Mapping, path: str | os.PathLike, title: str = "") -> None:
    """Validation accuracy and parameter count of the model after each block's decision, in the order visited."""
    plt = pyplot()
    blocks = metrics["blocks"]
    labels = ["original"] + [f"{b['block']}\n{b['candidate'] or 'kept'}" for b in blocks]
    accuracy = [metrics["val_accuracy_before"]] + [b["val_accuracy_after"] for b in blocks]
    params = [metrics["params_before"]] + [b["model_params_after"] for b in blocks]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4.2), constrained_layout=True)
    steps = range(len(labels))
    ax.plot(steps, [100 * a for a in accuracy], "o-", color="tab:blue", label="val accuracy")
    floor = 100 * metrics["val_accuracy_before"] - metrics["config"]["tolerance"]
    ax.axhline(floor, color="tab:blue", ls=":", lw=1, label="lowest accepted")
    ax.set_ylim(min(floor, *(100 * a for a in accuracy)) - 0.5, 100 * max(accuracy) + 0.5)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_ylabel("validation accuracy (%)", color="tab:blue")
    ax.set_xticks(list(steps), labels, fontsize=8)
    ax.grid(True, alpha=0.3)
    right = ax.twinx()
    right.plot(steps, params, "s--", color="tab:orange", label="parameters")
    right.set_ylabel("parameters", color="tab:orange")
    right.set_ylim(bottom=0)
    fig.suptitle(title or f"block swap (tolerance {metrics['config']['tolerance']} pp): accuracy and size per step")
    save_figure(fig, path)


def plot_search(record: Mapping, path: str | os.PathLike, title: str = "") -> None:
    """Every try of a strength search: the validation metric (and weights gzip size) per strength, against the
    budget's line (a floor for accuracy, a ceiling for an error); the kept setting is ringed."""
    plt = pyplot()
    tries = record["tries"]
    order = sorted(tries, key=lambda t: t["strength"])
    metric = record.get("metric", "accuracy")
    task = task_of_metric(metric)
    scale = 100 if task.percent else 1
    budget = record.get("max_drop", record.get("max_drop_pp"))

    def value(t):  # records written before "val" hold accuracy only
        return scale * t.get("val", t.get("val_accuracy"))

    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.plot([t["strength"] for t in order], [value(t) for t in order], ":", color="tab:blue", lw=1)
    for t in tries:
        ax.plot(t["strength"], value(t), "o" if t["passed"] else "x", color="tab:blue" if t["passed"]
                else "tab:red", ms=8)
    baseline = scale * record.get("baseline_val", record.get("baseline_val_accuracy"))
    line = baseline - budget if task.higher_is_better else baseline + budget
    ax.axhline(line, color="tab:red", ls="--", lw=1, label=f"budget (baseline {'-' if task.higher_is_better else '+'} "
                                                           f"{task.budget(budget)})")
    if record["chosen"] is not None:
        kept = next(t for t in tries if t["strength"] == record["chosen"])
        ax.plot(kept["strength"], value(kept), "o", mfc="none", mec="black", ms=15, label="kept")
    ax.set_xlabel(record["field"])
    ax.set_ylabel(f"validation {metric}" + (" (%)" if scale == 100 else ""), color="tab:blue")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left" if task.higher_is_better else "upper left", fontsize=8)  # away from the passing tries
    right = ax.twinx()
    right.plot([t["strength"] for t in order], [t["weights_gzip_bytes"] / 1024 for t in order], "s--",
               color="tab:orange")
    right.set_ylabel("weights, gzip (KB)", color="tab:orange")
    right.set_ylim(bottom=0)
    fig.suptitle(title or f"search over {record['field']}: {len(tries)} tries, kept {record['chosen']}")
    save_figure(fig, path)


def plot_predictions(true, predicted, path: str | os.PathLike, title: str = "") -> None:
    """A regressor's predictions against the true targets: on the diagonal is right, the spread is its error."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), constrained_layout=True)
    ax.scatter(true, predicted, s=10, alpha=0.6)
    low, high = min(min(true), min(predicted)), max(max(true), max(predicted))
    ax.plot([low, high], [low, high], color="grey", ls=":", lw=1, label="predicted = true")
    ax.set_xlabel("true target")
    ax.set_ylabel("predicted by the file")
    ax.legend(fontsize=8)
    ax.set_title(title or "predicted vs true (test)")
    save_figure(fig, path)


def plot_masks(final: Mapping, path: str | os.PathLike, title: str = "") -> None:
    """A segmenter's test images over their true and predicted masks (one colour per class), and its IoU per
    class: where it errs is seen, not read."""
    plt = pyplot()
    examples, names = final["examples"], final["class_names"]
    count = len(examples["images"])
    fig, axes = plt.subplots(3, count + 1, figsize=(2.2 * (count + 1), 6.6), constrained_layout=True, squeeze=False)
    colours = plt.get_cmap("tab10", max(len(names), 2))
    for j in range(count):
        image = np.asarray(examples["images"][j])
        for i, (panel, kwargs) in enumerate(((image[..., 0] if image.shape[-1] == 1 else image, {"cmap": "gray"}),
                                             (examples["true"][j], {"cmap": colours, "vmin": 0, "vmax": len(names)}),
                                             (examples["predicted"][j], {"cmap": colours, "vmin": 0,
                                                                         "vmax": len(names)}))):
            axes[i, j].imshow(panel, interpolation="nearest", **kwargs)
            axes[i, j].set_axis_off()
    for i, label in enumerate(("test image", "true mask", "predicted by the file")):
        axes[i, 0].set_title(label, fontsize=9, loc="left")
    for ax in axes[:, count]:
        ax.set_axis_off()
    bars = fig.add_subplot(axes[0, count].get_gridspec()[:, count])
    iou = [0.0 if v is None else 100 * v for v in final["iou"]]
    bars.barh(range(len(names)), iou, color=[colours(k) for k in range(len(names))])
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlim(0, 100)
    bars.set_xlabel("IoU (%)")
    fig.suptitle(title or f"{final['name']}: masks and IoU per class (test)")
    save_figure(fig, path)


def plot_sensitivity(scan: Mapping, path: str | os.PathLike, title: str = "") -> None:
    """Validation accuracy drop against sparsity, one curve per layer pruned alone (one-shot)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    sparsities = [100 * s for s in scan["sparsities"]]
    for layer in scan["layers"]:
        ax.plot(sparsities, layer["drop_pp"], "o-", label=f"{layer['name']} ({layer['weights']:,})")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("sparsity of the layer (%)")
    ax.set_ylabel("validation accuracy drop (pp)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(scan["layers"]) > 8 else 1)
    fig.suptitle(title or "pruning sensitivity: each layer pruned alone, no fine-tuning")
    save_figure(fig, path)


def plot_layer_errors(rows: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """SNR of every layer in graph order: where the curve dips, quantizing that layer hurts."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.5, 0.28 * len(rows)), 4.5), constrained_layout=True)
    snr = [row["snr_db"] for row in rows]
    ax.bar(range(len(rows)), snr, color=["tab:red" if row["output"] else "tab:blue" for row in rows])
    ax.set_xticks(range(len(rows)), [_short(row["layer"])[-28:] for row in rows], rotation=90, fontsize=6)
    ax.set_ylabel("SNR against the float file (dB; red: output)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "error of each layer against the float file")
    save_figure(fig, path)


def plot_scored(details: Mapping, directory: str | os.PathLike, suffix: str = "", title: str = "") -> Path:
    """The figure of a :func:`~kerascomp.report.scored` result, by what it holds: test images with true and
    predicted masks (``masks{suffix}.png``), predictions against the targets (``predictions{suffix}.png``) or
    the confusion matrix (``confusion{suffix}.png``). Returns its path."""
    directory = Path(directory)
    if details.get("examples"):
        path = directory / f"masks{suffix}.png"
        plot_masks(details, path, title=title)
    elif details.get("predicted"):
        path = directory / f"predictions{suffix}.png"
        plot_predictions(details["true"], details["predicted"], path, title=title)
    else:
        path = directory / f"confusion{suffix}.png"
        plot_confusion_matrix(details["confusion_matrix"], details["class_names"], path, title=title)
    return path


def technique_plots(model, metrics: Mapping, data, directory: str | os.PathLike,
                    runs: Sequence[tuple[str, str]] = (("fine-tuned", "fine_tune"),)) -> list[Path]:
    """The figures of one technique run: what the technique declares and what its metrics hold.

    Training curves and epoch times of the training runs the technique names
    (``runs``: label and metrics key, e.g. the fine-tuning, or the distilled
    student and its scratch twin), the result's confusion matrix on the test
    split (a segmenter's masks and IoU), the per-block chart of a block swap, and every try of a strength search.
    """
    directory = Path(directory)
    runs = {label: metrics[key] for label, key in runs
            if isinstance(metrics.get(key), Mapping) and metrics[key].get("history")}
    paths = []
    if runs:
        paths.append(directory / "training_curves.png")
        plot_training_curves({name: run["history"] for name, run in runs.items()}, paths[-1],
                             title=" vs ".join(runs) if len(runs) > 1 else "")
        timed = {name: run["epoch_seconds"] for name, run in runs.items() if run.get("epoch_seconds")}
        if timed:
            paths.append(directory / "epoch_times.png")
            plot_epoch_times(timed, paths[-1])
    if "blocks" in metrics:
        paths.append(directory / "swap.png")
        plot_swap(metrics, paths[-1])
    if "search" in metrics:
        paths.append(directory / "search.png")
        plot_search(metrics["search"], paths[-1])
    outputs = model.predict(data.x_test, batch_size=256, verbose=0)
    paths.append(plot_scored({"name": "result", **scored(data, outputs)}, directory, title="result, test set"))
    return paths
