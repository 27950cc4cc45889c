"""Markdown tables and matplotlib figures of benchmark results (Agg backend, files only)."""

from __future__ import annotations

import os
from typing import Sequence

from kerascomp._io import atomic_path

__all__ = ["results_table", "plot_tradeoff"]

_COLUMNS = ("name", "format", "quantization", "threads", "params", "nonzero", "size KB", "gzip KB",
            "accuracy", "p50 ms", "p90 ms")


def results_table(results: Sequence[dict]) -> str:
    """A Markdown table with one row per bench result."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in results:
        cells = (
            r["name"], r["format"], r["quantization"], r["threads"], f"{r['params']:,}", f"{r['nonzero_params']:,}",
            f"{r['size_bytes'] / 1024:.1f}", f"{r['gzip_bytes'] / 1024:.1f}", f"{r['accuracy']:.4f}",
            f"{r['latency_ms']['p50']:.3f}", f"{r['latency_ms']['p90']:.3f}",
        )
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def plot_tradeoff(results: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Accuracy vs gzip size and accuracy vs p50 latency, one labelled point per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = ((axes[0], lambda r: r["gzip_bytes"] / 1024, "gzip size (KB, log)"),
              (axes[1], lambda r: r["latency_ms"]["p50"], "latency p50, batch 1 (ms, log)"))
    for ax, x_of, label in panels:
        for r in results:
            name = r["name"] if r["threads"] == 1 else f"{r['name']} ({r['threads']}t)"
            ax.scatter(x_of(r), 100 * r["accuracy"], s=40)
            ax.annotate(name, (x_of(r), 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy of the artifact (%)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or "accuracy vs size and latency (up and left is better)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
