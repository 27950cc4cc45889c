"""Done-when measurement of distillation at the default options, through the CLI exactly as a user runs it.

For every seed (which also draws the data split, as ``--seed`` does): ``kerascomp train --model cnn`` (the
teacher at its defaults), then ``kerascomp distill --teacher teacher.keras --student cnn --student-arg width=4
--compare-scratch`` with nothing else set, plus each ``--variant`` (extra distill options, e.g.
``"--epochs 300"``) on the same teacher. ``gap_closed = (student - scratch) / (teacher - scratch)`` on test.

    python scripts/distill_cli_digits.py [--seeds 1,2,3] [--variant "--temperature 8" ...] [--out scripts/results]

Writes distill_cli_digits.json and .md into --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
import time
from pathlib import Path

from _cli import run, write_results

STUDENT = ("--student", "cnn", "--student-arg", "width=4", "--compare-scratch")


def measure(work: Path, seed: int, variants: list[str]) -> dict:
    teacher = work / f"teacher{seed}.keras"
    if run("train", "--model", "cnn", "--seed", str(seed), "--out", str(teacher)):
        raise SystemExit("training the teacher failed")
    results = {}
    for i, variant in enumerate(variants):
        out = work / f"student{seed}_{i}.json"
        if run("distill", "--teacher", str(teacher), *STUDENT, *shlex.split(variant), "--seed", str(seed),
               "--out", str(work / f"student{seed}_{i}.keras"), "--json", str(out)):
            raise SystemExit(f"distill {variant!r} failed")
        m = json.loads(out.read_text())
        results[variant] = {k: m[k] for k in ("teacher_accuracy", "student_accuracy", "scratch_accuracy",
                                               "gap_closed", "student_params", "teacher_params")}
        print(f"seed {seed} [{variant or 'defaults'}]: {results[variant]}", flush=True)
    return results


def markdown(result: dict) -> str:
    seeds = result["seeds"]
    lines = ["# Distillation at the default options on digits (done-when measurement)", "",
             "`kerascomp train --model cnn --seed S`, then `kerascomp distill --teacher teacher.keras --student cnn "
             "--student-arg width=4 --compare-scratch --seed S` plus the variant's options. Test accuracy; gap "
             f"closed per seed, then the mean of the seeds'. {result['minutes']:.0f} min in all.", "",
             "| variant | seed | teacher | distilled | scratch | gap closed |", "|---|---|---|---|---|---|"]
    for variant in result["variants"]:
        runs = [seeds[s][variant] for s in seeds]
        for seed in seeds:
            r = seeds[seed][variant]
            lines.append(f"| {variant or 'defaults'} | {seed} | {r['teacher_accuracy']:.4f} | "
                         f"{r['student_accuracy']:.4f} | {r['scratch_accuracy']:.4f} | {_gap(r['gap_closed'])} |")
        gaps = [r["gap_closed"] for r in runs if r["gap_closed"] is not None]
        lines.append(f"| {variant or 'defaults'} | **mean** | {statistics.mean(r['teacher_accuracy'] for r in runs):.4f}"
                     f" | {statistics.mean(r['student_accuracy'] for r in runs):.4f} | "
                     f"{statistics.mean(r['scratch_accuracy'] for r in runs):.4f} | "
                     f"**{_gap(statistics.mean(gaps) if gaps else None)}** |")
    r = next(iter(next(iter(seeds.values())).values()))
    lines += ["", f"Student {r['student_params']:,} parameters, teacher {r['teacher_params']:,}."]
    return "\n".join(lines) + "\n"


def _gap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variant", action="append", default=[], help="extra distill options (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = parser.parse_args()
    variants, start = ["", *args.variant], time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        seeds = {s: measure(Path(work), s, variants) for s in (int(x) for x in args.seeds.split(","))}
    result = {"variants": variants, "seeds": seeds, "minutes": (time.perf_counter() - start) / 60}
    write_results(args.out, "distill_cli_digits", result, markdown(result))


if __name__ == "__main__":
    main()
