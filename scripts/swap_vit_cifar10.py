"""Real-data block swap: the zoo ViT teacher on the CIFAR-10 subset, its blocks swapped one at a time.

Development benchmark only (the package and its tests never read ../shared). The teacher is trained with
``kerascomp train`` beforehand (see the README). The budget is kept small for a 2-core CPU: one distillation
epoch per replacement and a 1,024-example local fit. With ``--compare`` the depth-1 student of
``scripts/distill_vit_cifar10.py`` is listed beside the swapped model.

    python scripts/swap_vit_cifar10.py --teacher vit_teacher.keras --data ../shared/data/cifar10_subset.npz \
        [--tolerance 1.0] [--candidates simplified,narrow_mlp] [--compare scripts/results/distill_vit_cifar10.json] \
        [--model-out vit_swapped.keras] [--out scripts/results]

Writes swap_vit_cifar10.json, swap_vit_cifar10.md and swap_vit_cifar10.png into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kerascomp import load_data, load_model, save_model
from kerascomp.bench import compare_deployed
from kerascomp.compress.swap import SwapConfig, apply, format_plan, plan, swap_table
from kerascomp.files import atomic_path, write_json
from kerascomp.report import plot_swap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tolerance", type=float, default=1.0)
    parser.add_argument("--epochs-per-block", type=int, default=1)
    parser.add_argument("--fit-samples", type=int, default=1024)
    parser.add_argument("--fit-epochs", type=int, default=5)
    parser.add_argument("--candidates", help="comma-separated replacement names (default: all)")
    parser.add_argument("--order", default="forward")
    parser.add_argument("--bench-runs", type=int, default=100)
    parser.add_argument("--compare", help="distill_vit_cifar10.json, to list its depth-1 student")
    parser.add_argument("--model-out", help="also save the swapped model here (.keras)")
    parser.add_argument("--out", default="scripts/results")
    args = parser.parse_args()

    config = SwapConfig(tolerance=args.tolerance, epochs_per_block=args.epochs_per_block, order=args.order,
                        candidates=tuple(args.candidates.split(",")) if args.candidates else None,
                        fit_samples=args.fit_samples, fit_epochs=args.fit_epochs, batch_size=128,
                        learning_rate=1e-3, bench_runs=args.bench_runs)
    teacher = load_model(args.teacher)
    print(format_plan(plan(teacher, config)), flush=True)
    data = load_data(args.data)
    swapped, metrics = apply(teacher, data, config, measure=compare_deployed)
    if args.model_out:
        save_model(swapped, args.model_out, meta={"data": data.describe(), "swap": {"source": args.teacher}})
    student = _depth1_student(args.compare)
    out = Path(args.out)
    write_json(out / "swap_vit_cifar10.json", {"teacher": args.teacher, "depth1_student": student, **metrics})
    plot_swap(metrics, out / "swap_vit_cifar10.png", title="ViT on the CIFAR-10 subset: block swap")
    text = _markdown(metrics, student, args)
    with atomic_path(out / "swap_vit_cifar10.md") as tmp:
        tmp.write_text(text)
    print(text)


def _depth1_student(path: str | None) -> dict | None:
    """The plain depth-1 student's row of the distillation benchmark, if it has been run."""
    if not path or not Path(path).is_file():
        return None
    rows = json.loads(Path(path).read_text())["rows"]
    return next((r for r in rows if r["student"] == "vit depth 1"), None)


def _markdown(metrics: dict, student: dict | None, args) -> str:
    settings = (f"tolerance {args.tolerance} pp, {args.epochs_per_block} distillation epoch(s) per replacement, "
                f"local fit on {args.fit_samples} examples x {args.fit_epochs} epochs, order {args.order}, "
                f"candidates {args.candidates or 'all'}; {metrics['seconds'] / 60:.1f} min in all")
    lines = ["# Block swap of the ViT teacher (CIFAR-10 subset)", "", settings, "", swap_table(metrics), ""]
    if student:
        lines += ["| model | params | test accuracy |", "|---|---|---|",
                  f"| teacher | {metrics['params_before']:,} | {metrics['test_accuracy_before']:.4f} |",
                  f"| swapped teacher | {metrics['params_after']:,} | {metrics['test_accuracy_after']:.4f} |",
                  f"| distilled depth-1 student | {student['student_params']:,} | {student['student_accuracy']:.4f} |",
                  ""]
    lines.append("![accuracy and parameters per block](swap_vit_cifar10.png)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
