"""Fine-tuning recipes for pruning, measured on the main job's own chain over several seeds.

For every seed: the main job's teacher (zoo ``cnn`` width 32, 30 epochs) and its distilled student (width 16,
T=4, alpha=0.1, 40 epochs), exactly as ``configs/digits.yaml`` builds them. The student is then pruned to each
sparsity with each recipe, all else equal. Validation accuracy decides (the budget search sees only it), and
test accuracy is reported beside it.

    python scripts/finetune_recipes.py [--seeds 0,1,2] [--sparsities 0.75,0.875] [--out scripts/results]

Writes finetune_recipes.json and finetune_recipes.md into --out.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

from _cli import write_results

from kerascomp.compress import distill, prune
from kerascomp.data import load_data
from kerascomp.training import TrainConfig, evaluate, train
from kerascomp.training.distillation import DistillConfig

RECIPES = {  # name -> (PruneConfig overrides, fine-tune with the teacher)
    "main job (10 ep, lr 1e-3, teacher)": ({}, True),
    "no teacher": ({}, False),
    "20 epochs": ({"epochs": 20}, True),
    "lr 3e-4": ({"learning_rate": 3e-4}, True),
    "lr 3e-3": ({"learning_rate": 3e-3}, True),
    "lr 3e-3, no teacher": ({"learning_rate": 3e-3}, False),
    "lr 1e-2": ({"learning_rate": 1e-2}, True),
    "lr 3e-3, 20 epochs": ({"learning_rate": 3e-3, "epochs": 20}, True),
    "lr 3e-3, teacher alpha 0.5": ({"learning_rate": 3e-3, "alpha": 0.5}, True),
    "lr 3e-3, 20 epochs, erk": ({"learning_rate": 3e-3, "epochs": 20, "distribution": "erk"}, True),
    "lr 3e-3, 20 epochs, erk, no teacher": ({"learning_rate": 3e-3, "epochs": 20, "distribution": "erk"}, False),
    "lr 1e-3, 20 epochs, erk": ({"learning_rate": 1e-3, "epochs": 20, "distribution": "erk"}, True),
    "lr 1e-3, 20 epochs, erk, no teacher": ({"learning_rate": 1e-3, "epochs": 20, "distribution": "erk"}, False),
}
BASE = {"epochs": 10, "distill_from": None, "temperature": 4.0, "alpha": 0.1, "distribution": "uniform"}


def chain(seed: int, data, pruned: str):
    """The main job's teacher, and the model to prune: that teacher, or its distilled student."""
    teacher, _ = train("cnn", data, TrainConfig(epochs=30, seed=seed, verbose=0), model_args={"width": 32})
    if pruned == "teacher":
        return teacher, teacher
    student, _ = distill.apply("cnn", data, DistillConfig(temperature=4.0, alpha=0.1), teacher=teacher,
                               train_config=distill.default_budget(epochs=40, seed=seed, verbose=0),
                               student_args={"width": 16})
    return teacher, student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sparsities", default="0.75,0.875")
    parser.add_argument("--recipes", default=";".join(RECIPES), help="names from RECIPES, separated by ;")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="the main job holds out 0.25")
    parser.add_argument("--prune", choices=("student", "teacher"), default="student",
                        help="which model is pruned; pruning the teacher, 'teacher' recipes distil from itself")
    parser.add_argument("--out", default="scripts/results")
    parser.add_argument("--name", default="finetune_recipes", help="stem of the .json and .md written")
    args = parser.parse_args()
    started, rows = time.perf_counter(), []
    for seed in (int(s) for s in args.seeds.split(",")):
        data = load_data("digits", val_fraction=args.val_fraction, seed=seed)
        teacher, pruned = chain(seed, data, args.prune)
        base = evaluate(teacher, data)
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            for name in args.recipes.split(";"):
                overrides, with_teacher = RECIPES[name]
                config = prune.PruneConfig(sparsity=sparsity, seed=seed, verbose=0, **{**BASE, **overrides})
                begun = time.perf_counter()
                _, m = prune.apply(pruned, data, config, teacher=teacher if with_teacher else None)
                rows.append({"seed": seed, "sparsity": sparsity, "recipe": name, "val_accuracy": m["val_accuracy"],
                             "test_accuracy": m["test_accuracy"], "teacher_val": base["val_accuracy"],
                             "teacher_test": base["test_accuracy"], "seconds": time.perf_counter() - begun})
                print(f"seed {seed} sparsity {sparsity} {name}: val {m['val_accuracy']:.4f} "
                      f"test {m['test_accuracy']:.4f}", flush=True)
    out = Path(args.out)
    result = {"machine": platform.processor() or platform.machine(), "pruned": args.prune, "rows": rows,
              "minutes": (time.perf_counter() - started) / 60}
    write_results(out, args.name, result,
                  _markdown(rows, result["minutes"], args.recipes.split(";"), len(data.y_val), args.prune))


def _markdown(rows: list[dict], minutes: float, recipes: list[str], n_val: int, pruned: str) -> str:
    lines = [f"# Pruning fine-tuning recipes on the main job's {pruned} (digits)", "",
             "Drop in percentage points below the teacher, mean over seeds (each seed: its own teacher, student and "
             f"pruning). Validation has {n_val} images (1 image = {100 / n_val:.2f} pp), test 450 (0.22 pp).", "",
             "| sparsity | recipe | val drop (pp) | test drop (pp) | worst val drop | s per run |", "|---|---|---|---|---|---|"]
    for sparsity in sorted({r["sparsity"] for r in rows}):
        for recipe in recipes:
            group = [r for r in rows if r["sparsity"] == sparsity and r["recipe"] == recipe]
            val = [100 * (r["teacher_val"] - r["val_accuracy"]) for r in group]
            test = [100 * (r["teacher_test"] - r["test_accuracy"]) for r in group]
            lines.append(f"| {sparsity} | {recipe} | {statistics.mean(val):.2f} | {statistics.mean(test):.2f} | "
                         f"{max(val):.2f} | {statistics.mean(r['seconds'] for r in group):.1f} |")
    return "\n".join(lines + ["", f"Total {minutes:.1f} min, seeds {sorted({r['seed'] for r in rows})}."]) + "\n"


if __name__ == "__main__":
    main()
