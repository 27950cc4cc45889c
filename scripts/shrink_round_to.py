"""Which chunk size (``shrink --round-to``) pays on XNNPACK here? Latency only, no fine-tuning.

The zoo cnn teacher (width 32) is trained on digits, then cut to half its MACs with chunks of 1, 4, 8 and 16
channels (magnitude importance), converted to float32 and int8 ``.tflite`` files and timed with LiteRT at
1 thread, batch 1: p50 of ``--runs`` calls, ``--repeats`` times, the lowest p50 kept. The kept channel counts
differ a little between chunk sizes, so the number that compares them is MAC/s, beside p50.

    python scripts/shrink_round_to.py [--runs 3000] [--repeats 3] [--out scripts/results]

Writes shrink_round_to.md into --out.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from kerascomp.backend import tf
from kerascomp.bench import machine_info
from kerascomp.runtime import measure_latency
from kerascomp.compress.shrink import analyse, rebuild
from kerascomp.compress.shrink.allocate import allocate, magnitude
from kerascomp.data import load_data
from kerascomp.files import atomic_path
from kerascomp.runtime import load
from kerascomp.runtime.footprint import footprint
from kerascomp.training import TrainConfig, train

CHUNKS = (1, 4, 8, 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = parser.parse_args()
    data = load_data("digits")
    teacher, _ = train("cnn", data, TrainConfig(epochs=30, verbose=0), model_args={"width": 32})
    graph = analyse(teacher)
    groups = graph.groups()
    scores = magnitude(graph, groups)
    x = data.x_test[:1].astype(np.float32)
    machine = machine_info(1)
    lines = [f"# shrink --round-to on XNNPACK ({machine['cpu']}, {platform.machine()}, {machine['cores']} cores, "
             f"SIMD: {', '.join(machine['simd'])}; LiteRT 1 thread, batch 1, lowest p50 of {args.repeats} x "
             f"{args.runs} calls)", "",
             "| round_to | precision | kept channels per group | MACs | p50 ms | GMAC/s |", "|---|---|---|---|---|---|"]
    for chunk in CHUNKS:
        kept = allocate(graph, groups, scores, "macs", 0.5, chunk)
        small = rebuild(graph, kept)
        for mode in ("fp32", "int8"):
            path = args.out / f".shrink_round_to_{chunk}_{mode}.tflite"
            path.write_bytes(_convert(small, data, mode))
            model = load(path)
            p50 = min(measure_latency(model.run, x, args.runs, args.runs // 10)["p50"] for _ in range(args.repeats))
            macs = footprint(path)["macs"]
            path.unlink()
            lines.append(f"| {chunk} | {mode} | {sorted(len(v) for v in kept.values())} | {macs:,} | {p50:.4f} | "
                         f"{macs / p50 / 1e6:.1f} |")
            print(lines[-1], flush=True)
    with atomic_path(args.out / "shrink_round_to.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _convert(model, data, mode: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in data.x_train[:200])
    return converter.convert()


if __name__ == "__main__":
    main()
