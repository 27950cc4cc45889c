"""Render a pipeline run's ``report.json`` as ``report.md`` with its figures in ``plots/``.

Rendering reads only the JSON document, so ``kerascomp report DIR`` can redraw
a finished run without TensorFlow or the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kerascomp.budget import metric_of
from kerascomp.errors import ConfigError
from kerascomp.files import write_bytes, write_json
from kerascomp.report import (
    kernel_table,
    plot_scored,
    plot_search,
    plot_tradeoff,
    plot_training_curves,
    pyplot,
    results_table,
    save_figure,
)
from kerascomp.tasks import task_of, task_of_metric

__all__ = ["write_pipeline_report", "render"]


def write_pipeline_report(document: dict, out: str | os.PathLike) -> Path:
    """Write ``report.json``, the figures and ``report.md`` into ``out``; returns the Markdown path."""
    out = Path(out)
    write_json(out / "report.json", document)
    return _render(document, out)


def render(out: str | os.PathLike) -> Path:
    """Re-render ``report.md`` and the figures from ``out/report.json``."""
    path = Path(out) / "report.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {out} the folder of a `kerascomp run`?")
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return _render(document, Path(out))


def _render(document: dict, out: Path) -> Path:
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    task = task_of(document["dataset"])
    sections = [f"# kerascomp report: {document['dataset']['name']}", _choice_section(document.get("choice"), task),
                _summary_section(document, task)]
    results = document.get("results") or []
    if results:
        plot_tradeoff(results, plots / "tradeoff.png", chosen=(document.get("choice") or {}).get("chosen"))
        sections += [f"![{task.metric} vs size and latency](plots/tradeoff.png)", "## Every artifact",
                     results_table(results)]
        kernels = kernel_table(results)
        if kernels:
            sections += ["## Where the nodes run (LiteRT, XNNPACK)", kernels]
    sections.append(_stages_section(document, plots, task))
    sections.append(_final_section(document.get("final") or {}, plots))
    markdown = "\n\n".join(s for s in sections if s) + "\n"
    write_bytes(out / "report.md", markdown)
    return out / "report.md"


def _choice_section(choice: dict | None, task) -> str:
    """The budget's verdict first: which artifact ships, or plainly that none may."""
    if not choice:
        return ""
    ship = [f"The file to ship: `{choice['path']}`", ""] if choice.get("path") else []
    unit = " (pp)" if task.percent else ""
    lines = ["## Choice within the budget", "", f"**{choice['message']}**", "", *ship,
             f"Validation {task.metric} of each deployed file, drop below {choice['baseline']} "
             f"(budget {task.budget(choice.get('max_drop', choice.get('max_drop_pp')))}; "
             f"objective: {choice['objective']}):", "",
             f"| artifact | val {task.metric} | val drop{unit} | gzip (bytes) | p50 (ms) | within |",
             "|---|---|---|---|---|---|"]
    for c in sorted(choice["candidates"], key=lambda c: c["gzip_bytes"]):
        mark = "**chosen**" if c["name"] == choice["chosen"] else ("yes" if c["within"] else "no")
        value, drop = c.get("val", c.get("val_accuracy")), c.get("val_drop", c.get("val_drop_pp"))
        lines.append(f"| {c['name']} | {value:.4f} | {task.amount(drop, unit=False)} | "
                     f"{c['gzip_bytes']:,} | {c['p50_ms']:.3f} | {mark} |")
    return "\n".join(lines)


def _summary_section(document: dict, task) -> str:
    summary = document.get("summary") or {}
    rows = {r["name"]: r for r in document.get("results") or []}
    base, final = rows.get(summary.get("baseline")), rows.get(summary.get("final"))
    if not (base and final):
        return ""
    lines = ["## Summary", "", f"| | {base['name']} | {final['name']} | change |", "|---|---|---|---|"]
    others = [key for key in base.get("outputs") or {} if key != task.metric]  # the outputs the budget does not read
    for label, value, fmt, better in (
        ("parameters (non-zero)", lambda r: r["nonzero_params"], "{:,}", ("fewer", "more")),
        ("size (KB)", lambda r: r["size_bytes"] / 1024, "{:.1f}", ("smaller", "larger")),
        ("gzip size (KB)", lambda r: r["gzip_bytes"] / 1024, "{:.1f}", ("smaller", "larger")),
        ("latency p50 (ms)", lambda r: r["latency_ms"]["p50"], "{:.3f}", ("faster", "slower")),
        (f"test {task.metric}", metric_of, task, None),
        *((f"test {key}", lambda r, key=key: r["outputs"][key], task_of_metric(key), None) for key in others),
    ):
        a, b = value(base), value(final)
        if better is None:
            delta = fmt.amount((100 if fmt.percent else 1) * (b - a), signed=True)
            fmt = fmt.number
        else:
            delta = f"{a / b:.1f}x {better[0]}" if a >= b else f"{b / a:.1f}x {better[1]}"
        shown = fmt if callable(fmt) else fmt.format
        lines.append(f"| {label} | {shown(a)} | {shown(b)} | {delta} |")
    return "\n".join(lines)


def _stages_section(document: dict, plots: Path, task) -> str:
    stages = document.get("stages") or []
    val, test = task.keys
    lines = ["## Stages", "", f"| stage | kind | seconds | params | val {task.metric} | test {task.metric} | s/epoch |",
             "|---|---|---|---|---|---|---|"]
    for stage in stages:
        m = stage.get("metrics") or {}
        cells = [stage["name"], stage.get("kind", ""), f"{stage['seconds']:.1f}", _fmt(m.get("params"), "{:,}"),
                 _fmt(m.get(val), "{:.4f}"), _fmt(m.get(test), "{:.4f}"),
                 _fmt(m.get("seconds_per_epoch"), "{:.2f}")]
        lines.append("| " + " | ".join(cells) + " |")
    for stage in stages:
        record = (stage.get("metrics") or {}).get("search")
        if record:
            plot_search(record, plots / f"search_{stage['name']}.png", title=f"{stage['name']}: {record['field']} "
                        f"searched within {task.budget(record.get('max_drop', record.get('max_drop_pp')))}, "
                        f"kept {record['chosen']}")
            lines += ["", f"![{stage['name']} search](plots/search_{stage['name']}.png)"]
    trained = [s for s in stages if (s.get("metrics") or {}).get("history")]
    if trained:
        plot_training_curves({s["name"]: s["metrics"]["history"] for s in trained}, plots / "curves.png",
                             title="training curves per stage")
        _plot_epoch_seconds(trained, plots / "epoch_seconds.png")
        lines += ["", "![training curves](plots/curves.png)", "", "![seconds per epoch](plots/epoch_seconds.png)"]
    return "\n".join(lines)


def _final_section(final: dict, plots: Path) -> str:
    if not final:
        return ""
    heads = final.get("outputs") or {None: final}
    lines = [f"## Final artifact: {final['name']}"]
    for head, details in heads.items():
        if head is not None:
            lines += ["", f"### Output `{head}`"]
        lines += ["", *_scored_lines({"name": final["name"], **details}, plots, f"_{head}" if head else "")]
    if final.get("layer_sparsity"):
        _plot_sparsity(final["layer_sparsity"], plots / "sparsity.png")
        lines += ["", "![sparsity per layer](plots/sparsity.png)"]
    return "\n".join(lines)


def _scored_lines(final: dict, plots: Path, suffix: str) -> list[str]:
    """One output's test result and its figure: masks, predictions against targets, or a confusion matrix."""
    if final.get("examples"):
        said, title = f"{100 * final['value']:.2f}%", "test masks"
    elif final.get("predicted"):
        said, title = f"{final['value']:.4g}", "test set"
    else:
        said, title = None, "test set"
    figure = plot_scored(final, plots, suffix, title=f"{final['name']}: {title}" + (
        f" ({final['metric']} {said})" if said else ""))
    if said is not None:
        return [f"Test {final['metric']} of the deployed file, run by its runtime: {said}.", "",
                f"![{title}](plots/{figure.name})"]
    _plot_per_class(final, plots / f"per_class{suffix}.png")
    return [f"Test accuracy of the deployed file, run by the LiteRT interpreter: {100 * final['accuracy']:.2f}%.", "",
            f"![confusion matrix](plots/{figure.name})", "",
            f"![precision and recall per class](plots/per_class{suffix}.png)"]


def _fmt(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _plot_epoch_seconds(stages: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    names = [s["name"] for s in stages]
    ax.bar(names, [s["metrics"].get("seconds_per_epoch", 0) for s in stages], color="tab:blue")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("time per epoch by stage")
    save_figure(fig, path)


def _plot_per_class(final: dict, path: Path) -> None:
    import numpy as np

    plt = pyplot()
    names = final["class_names"]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) + 2), 3.5), constrained_layout=True)
    ax.bar(x - 0.2, final["precision"], 0.4, label="precision")
    ax.bar(x + 0.2, final["recall"], 0.4, label="recall")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(min(0.5, min(final["precision"] + final["recall"])), 1.0)
    ax.legend(fontsize=8)
    ax.set_title(f"{final['name']}: per-class precision and recall (test)")
    save_figure(fig, path)


def _plot_sparsity(layers: dict, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(layers) + 2), 3.5), constrained_layout=True)
    ax.bar(list(layers), [100 * v for v in layers.values()], color="tab:green")
    ax.set_ylabel("zero weights (%)")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    ax.set_title("sparsity per layer of the final model")
    save_figure(fig, path)
