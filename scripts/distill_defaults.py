"""Which distillation settings pay, measured over seeds on several datasets through ``kerascomp.analysis.sweep``.

For every seed a teacher is trained (its own seed), then every grid point distils the same student
architecture, and the student is also trained from scratch with the same budget and initialisation. Points
are ranked by mean *validation* gap closed (the test split only reports); a setting that is best on one seed
of one dataset is an anecdote, so the table gives the mean and the worst seed.

Datasets: ``digits`` (8x8, width-4 cnn student, 1.9% of the teacher); ``digits16`` (digits upscaled to 16x16
with a random 0-2 pixel shift and Gaussian noise per image, fixed by seed 0, built here, never downloaded);
``cifar`` (the CIFAR-10 subset at ``../shared/data/cifar10_subset.npz``, development data only).

    python scripts/distill_defaults.py --data digits --seeds 1,2,3 [--grid "temperature=2,4,8;alpha=0,0.5"]

Writes distill_defaults_<data>.json and .md into --out.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from kerascomp.analysis import sweep
from kerascomp.compress import distill
from kerascomp.data import load_data
from kerascomp.files import atomic_path, write_json
from kerascomp.training import TrainConfig, train

SETUPS = {  # data -> (teacher args, teacher epochs, student args, distillation epochs)
    "digits": ({"width": 32}, 30, {"width": 4, "dropout": 0.0}, 150),
    "digits16": ({"width": 32}, 30, {"width": 4, "dropout": 0.0}, 100),
    "cifar": ({"width": 32}, 25, {"width": 8, "dropout": 0.0}, 30),
}
CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_subset.npz"


def dataset(name: str, work: Path):
    if name == "digits":
        return load_data("digits")
    if name == "cifar":
        return load_data(str(CIFAR))
    digits = load_data("digits")  # all 1,797 images, in [0, 1]; the npz loader splits them again
    x = np.concatenate([digits.x_train, digits.x_val, digits.x_test])
    y = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # 8x8 -> 16x16
    shifted = np.stack([np.roll(img, tuple(rng.integers(-2, 3, size=2)), axis=(0, 1)) for img in big])
    noisy = np.clip(shifted + rng.normal(0, 0.15, shifted.shape), 0, 1).astype(np.float32)
    path = work / "digits16.npz"
    np.savez(path, x=(255 * noisy).astype(np.uint8), y=y)
    return load_data(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=SETUPS, default="digits")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--grid", default="temperature=2,4,8;alpha=0,0.5")
    parser.add_argument("--out", default="scripts/results")
    args = parser.parse_args()
    grid = {k: [_value(v) for v in values.split(",")] for k, values in (item.split("=") for item in args.grid.split(";"))}
    teacher_args, teacher_epochs, student_args, epochs = SETUPS[args.data]
    started, seeds = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as work:
        data = dataset(args.data, Path(work))
        for seed in (int(s) for s in args.seeds.split(",")):
            teacher, t = train("cnn", data, TrainConfig(epochs=teacher_epochs, seed=seed, verbose=0),
                               model_args=teacher_args)
            print(f"seed {seed}: teacher val {t['val_accuracy']:.4f} test {t['test_accuracy']:.4f}", flush=True)
            state = sweep.sweep(teacher, data, grid, Path(work) / f"sweep_{seed}.json", student="cnn",
                                student_args=student_args, progress=lambda m: print(m, flush=True),
                                train_config=distill.default_budget(epochs=epochs, seed=seed, verbose=0))
            seeds[seed] = {"teacher": {k: t[k] for k in ("val_accuracy", "test_accuracy", "params")},
                           "points": state["points"]}
    result = {"data": args.data, "machine": platform.processor() or platform.machine(), "grid": grid,
              "teacher_args": teacher_args, "student_args": student_args, "epochs": epochs, "seeds": seeds,
              "minutes": (time.perf_counter() - started) / 60}
    out = Path(args.out)
    write_json(out / f"distill_defaults_{args.data}.json", result)
    with atomic_path(out / f"distill_defaults_{args.data}.md") as tmp:
        tmp.write_text(_markdown(result))
    print((out / f"distill_defaults_{args.data}.md").read_text())


def _value(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _gap(teacher: float, student: float, scratch: float) -> float:
    return (student - scratch) / (teacher - scratch) if teacher > scratch else float("nan")


def _markdown(result: dict) -> str:
    seeds = result["seeds"]
    keys = sorted({p["key"] for s in seeds.values() for p in s["points"]})
    rows = []
    for key in keys:
        per = [(s["teacher"], next(p for p in s["points"] if p["key"] == key)) for s in seeds.values()]
        val_gap = [_gap(t["val_accuracy"], p["student_val_accuracy"], p["scratch_val_accuracy"]) for t, p in per]
        test_gap = [_gap(t["test_accuracy"], p["student_accuracy"], p["scratch_accuracy"]) for t, p in per]
        rows.append((key, statistics.mean(p["student_val_accuracy"] for _, p in per),
                     statistics.mean(p["student_accuracy"] for _, p in per),
                     statistics.mean(p["scratch_accuracy"] for _, p in per), _nanmean(val_gap), _nanmean(test_gap),
                     min(test_gap)))
    teacher = statistics.mean(s["teacher"]["test_accuracy"] for s in seeds.values())
    lines = [f"# Distillation settings on {result['data']}", "",
             f"Teacher cnn {result['teacher_args']} (mean test accuracy {teacher:.4f}); student cnn "
             f"{result['student_args']}; {result['epochs']} epochs, seeds {', '.join(map(str, seeds))}; "
             f"{result['machine']}, {result['minutes']:.0f} min. Ranked by mean validation accuracy of the student.",
             "", "| setting | val (distilled) | test (distilled) | test (scratch) | gap closed, val | gap closed, test "
             "| worst seed, test |", "|---|---|---|---|---|---|---|"]
    for key, val, test, scratch, vgap, tgap, worst in sorted(rows, key=lambda r: -r[1]):
        lines.append(f"| {key} | {val:.4f} | {test:.4f} | {scratch:.4f} | {vgap:.2f} | {tgap:.2f} | {worst:.2f} |")
    return "\n".join(lines) + "\n"


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.mean(finite) if finite else float("nan")


if __name__ == "__main__":
    main()
