"""Done-when measurement of the accuracy budget on the digits teacher, through the CLI exactly as a user runs it.

For every seed (which also draws the data split, as ``--seed`` does):

1. ``train`` the teacher (zoo ``cnn``, defaults) and ``convert`` it to a float32 ``.tflite``;
2. for each ``--distribution``: ``prune teacher.keras --max-drop B`` (the sparsity is searched) ->
   ``qat --preserve sparsity --max-drop B`` -> ``convert --quantize int8``;
3. ``bench`` the seed's ``.tflite`` files in one run: the gzip ratio against the teacher's float32 file and
   the test-accuracy drop of the int8 file (the target: >= 12x within 0.5 pp).

    python scripts/prune_qat_digits.py [--seeds 0,1,2] [--max-drop 0.5] [--val-fraction 0.25]
        [--distributions uniform,erk] [--out scripts/results] [--work DIR]

Writes prune_qat_digits.json and prune_qat_digits.md into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _cli import run, write_results

PRUNE_EPOCHS, QAT_EPOCHS, TARGET_RATIO = 20, 5, 12


def chain(work: Path, seed: int, args) -> dict:
    """The teacher, then prune -> PQAT -> int8 for each distribution, and one bench run over the seed's files."""
    data = ["--data", "digits", "--val-fraction", str(args.val_fraction), "--seed", str(seed)]
    teacher = work / "teacher.keras"
    if run("train", "--model", "cnn", *data, "--out", str(teacher), "--json", str(work / "teacher.json")):
        raise SystemExit("training the teacher failed")
    run("convert", str(teacher), "--quantize", "none", *data, "--out", str(work / "teacher_fp32.tflite"))
    chains = {}
    for distribution in args.distributions.split(","):
        pruned, qat, final = (work / f"{distribution}_{step}" for step in ("pruned.keras", "pqat.keras", "int8.tflite"))
        budget = ["--max-drop", str(args.max_drop)]
        failed = (run("prune", str(teacher), *budget, "--distribution", distribution, "--epochs", str(PRUNE_EPOCHS),
                      *data, "--out", str(pruned), "--json", str(work / f"{distribution}_prune.json"))
                  or run("qat", str(pruned), "--preserve", "sparsity", *budget, "--epochs", str(QAT_EPOCHS), *data,
                         "--out", str(qat), "--json", str(work / f"{distribution}_qat.json"))
                  or run("convert", str(qat), "--quantize", "int8", *data, "--out", str(final)))
        chains[distribution] = {"failed": bool(failed)}
        if not failed:
            prune = json.loads((work / f"{distribution}_prune.json").read_text())
            chains[distribution].update(sparsity=prune["sparsity"], tries=prune["search"]["tries"],
                                        val_drop_pp=json.loads((work / f"{distribution}_qat.json").read_text())
                                        ["budget"]["drop_pp"])
    files = sorted(str(f) for f in work.glob("*.tflite"))
    run("bench", *files, *data, "--json", str(work / "bench.json"))
    bench = json.loads((work / "bench.json").read_text())
    rows = {r["name"]: r for r in bench["results"]}
    base = rows["teacher_fp32"]
    for distribution, result in chains.items():
        if not result["failed"]:
            final = rows[f"{distribution}_int8"]
            result.update(gzip_ratio=base["gzip_bytes"] / final["gzip_bytes"],
                          test_drop_pp=100 * (base["accuracy"] - final["accuracy"]))
    return {"teacher": {k: base[k] for k in ("accuracy", "params", "gzip_bytes")}, "chains": chains,
            "cpu": bench["machine"]["cpu"]}


def markdown(result: dict) -> str:
    lines = ["# Accuracy budget on the digits teacher: prune -> PQAT -> int8 (done-when measurement)", "",
             f"Teacher: zoo `cnn` (defaults), trained per seed. Chain: `prune --max-drop {result['max_drop']}` "
             f"(sparsity searched, {PRUNE_EPOCHS} epochs) -> `qat --preserve sparsity --max-drop {result['max_drop']}` "
             f"({QAT_EPOCHS} epochs) -> `convert --quantize int8`; `--val-fraction {result['val_fraction']}`. "
             f"The ratio and the test drop come from one `bench` run per seed (the teacher's float32 .tflite vs the "
             f"int8 file). Target: >= {TARGET_RATIO}x within {result['max_drop']} pp.", "",
             "| distribution | seed | sparsity chosen | val drop (pp) | test drop (pp) | gzip ratio | tries |",
             "|---|---|---|---|---|---|---|"]
    for distribution in result["distributions"]:
        done = []
        for seed, run_ in result["seeds"].items():
            c = run_["chains"][distribution]
            if c["failed"]:
                lines.append(f"| {distribution} | {seed} | failed | | | | |")
                continue
            done.append(c)
            tries = ", ".join(f"{t['strength']:g} {'pass' if t['passed'] else 'fail'}" for t in c["tries"])
            lines.append(f"| {distribution} | {seed} | {c['sparsity']:.4f} | {c['val_drop_pp']:+.2f} | "
                         f"{c['test_drop_pp']:+.2f} | {c['gzip_ratio']:.1f}x | {tries} |")
        if done:
            lines.append(f"| {distribution} | mean | {statistics.mean(c['sparsity'] for c in done):.4f} | "
                         f"{statistics.mean(c['val_drop_pp'] for c in done):+.2f} | "
                         f"{statistics.mean(c['test_drop_pp'] for c in done):+.2f} | "
                         f"{statistics.mean(c['gzip_ratio'] for c in done):.1f}x | |")
    return "\n".join(lines + ["", f"Total {result['minutes']:.1f} min on {result['machine']}."]) + "\n"


def main_script() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--distributions", default="uniform,erk")
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    parser.add_argument("--work", type=Path, help="Keep the models and .tflite files here [default: a temp dir].")
    args = parser.parse_args()
    start, seeds = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            work = (args.work or Path(tmp)) / f"seed{seed}"
            work.mkdir(parents=True, exist_ok=True)
            seeds[seed] = chain(work, seed, args)
    result = {"max_drop": args.max_drop, "val_fraction": args.val_fraction,
              "distributions": args.distributions.split(","), "seeds": seeds,
              "machine": seeds[max(seeds)]["cpu"], "minutes": (time.perf_counter() - start) / 60}
    write_results(args.out, "prune_qat_digits", result, markdown(result))


if __name__ == "__main__":
    main_script()
