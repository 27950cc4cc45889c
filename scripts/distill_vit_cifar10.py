"""Real-data distillation check: the seed ViT teacher on the CIFAR-10 subset, distilled into small ViTs.

Development benchmark only (the package and its tests never read ../shared). The teacher is trained with
``kerascomp train`` beforehand (see the README); each student is distilled with the teacher's logits cached
(no augmentation, so an epoch costs what plain training costs) and trained from scratch with the same budget.

    python scripts/distill_vit_cifar10.py --teacher vit_teacher.keras --data ../shared/data/cifar10_subset.npz \
        [--epochs 10] [--out scripts/results]

Writes distill_vit_cifar10.json and distill_vit_cifar10.md into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kerascomp import load_data, load_model
from kerascomp.compress.distill import apply
from kerascomp.files import atomic_path, write_json
from kerascomp.training import TrainConfig
from kerascomp.training.distillation import DistillConfig

STUDENTS = {
    "vit depth 1": {"depth": 1},
    "vit simplified depth 1": {"depth": 1, "block": "simplified"},
}
COMMON = {"patch_size": 4, "dim": 256, "heads": 4, "mlp_dim": 512, "gelu_approximate": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--out", default="scripts/results")
    args = parser.parse_args()

    data = load_data(args.data)
    teacher = load_model(args.teacher)
    budget = TrainConfig(epochs=args.epochs, batch_size=128, learning_rate=1e-3, patience=0)
    config = DistillConfig(temperature=args.temperature, alpha=args.alpha)
    rows = []
    for name, extra in STUDENTS.items():
        _, metrics = apply("vit", data, config, teacher=teacher, train_config=budget,
                           student_args={**COMMON, **extra}, compare_scratch=True)
        rows.append({"student": name, "args": {**COMMON, **extra}, **{k: v for k, v in metrics.items()
                                                                      if not isinstance(v, dict)}})
        print(rows[-1])
    out = Path(args.out)
    document = {"data": data.describe(), "teacher": args.teacher, "epochs": args.epochs,
                "temperature": args.temperature, "alpha": args.alpha, "rows": rows}
    write_json(out / "distill_vit_cifar10.json", document)
    with atomic_path(out / "distill_vit_cifar10.md") as tmp:
        tmp.write_text(_table(rows))
    print(_table(rows))


def _table(rows: list[dict]) -> str:
    lines = ["| model | params | test accuracy (distilled) | test accuracy (scratch) | gap closed | s/epoch distilled | s/epoch scratch |",
             "|---|---|---|---|---|---|---|"]
    teacher = rows[0]
    lines.append(f"| teacher (vit depth 4) | {teacher['teacher_params']:,} | {teacher['teacher_accuracy']:.4f} | | | | |")
    for r in rows:
        gap = "" if r.get("gap_closed") is None else f"{r['gap_closed']:.2f}"
        lines.append(f"| {r['student']} | {r['student_params']:,} | {r['student_accuracy']:.4f} | "
                     f"{r['scratch_accuracy']:.4f} | {gap} | {r['student_seconds_per_epoch']:.1f} | "
                     f"{r['scratch_seconds_per_epoch']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
