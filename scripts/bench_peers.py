"""Side-by-side runtimes for one model at a time: TensorFlow, LiteRT (fp32, float16, dynamic, int8) and
onnxruntime (fp32, its own static int8 QDQ), same test inputs, same thread count.

Models: the digits CNN (trained here, real accuracy), the seed ViT (patch 4, dim 256, depth 4, heads 4,
mlp 512 on 32x32x3) and MobileNetV2 (alpha 0.35) at 96x96. The last two are randomly initialised, which is
fine for latency; their "accuracy" column is top-1 agreement with the Keras model on random inputs and is
marked as such.

    python scripts/bench_peers.py [--out scripts/results] [--threads 1] [--runs 200]

Writes bench_peers.json and bench_peers.md into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from kerascomp._compat import tf

tf.config.threading.set_intra_op_parallelism_threads(1)  # the same thread budget for every runtime
tf.config.threading.set_inter_op_parallelism_threads(1)

from kerascomp import bench, data as datasets, models, training  # noqa: E402
from kerascomp._io import write_json  # noqa: E402
from kerascomp.export import export  # noqa: E402
from kerascomp.report import results_table  # noqa: E402
from kerascomp.saving import save_model  # noqa: E402

# (file suffix, quantize, int8 io, LiteRT op resolver)
VARIANTS = (
    ("fp32.tflite", "none", False, "auto"),
    ("float16.tflite", "float16", False, "auto"),
    ("dynamic.tflite", "dynamic", False, "auto"),
    ("int8.tflite", "int8", False, "auto"),
    ("int8io.tflite", "int8", True, "auto"),
    ("int8io.tflite", "int8", True, "builtin"),
    ("fp32.onnx", "none", False, None),
    ("int8.onnx", "int8", False, None),
)


def digits_case(work: Path):
    """The zoo CNN trained on digits: real accuracy on the real test split."""
    data = datasets.load_data("digits")
    model, _ = training.train("cnn", data, training.TrainConfig(epochs=30, verbose=0))
    return "digits_cnn", model, data, "test accuracy"


def random_case(name: str, builder_args: dict, input_shape: tuple, n_test: int = 200):
    """A randomly initialised model; labels are its own top-1, so accuracy reads as agreement with Keras."""
    model = models.build(input_shape=input_shape, num_classes=10, **builder_args)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(n_test + 300, *input_shape)).astype(np.float32)
    y = model.predict(x, verbose=0).argmax(1)
    data = datasets.Dataset(name=f"random {input_shape}", x_train=x[:200], y_train=y[:200], x_val=x[200:300],
                            y_val=y[200:300], x_test=x[300:], y_test=y[300:],
                            class_names=tuple(str(i) for i in range(10)), scaling=datasets.Scaling())
    return name, model, data, "top-1 agreement with Keras (random init)"


def run_case(name, model, data, accuracy_meaning, work: Path, threads: int, runs: int) -> list[dict]:
    keras_path = save_model(model, work / f"{name}.keras")
    rows = bench.bench([keras_path], data, threads=(threads,), runs=runs)["results"]
    for suffix, quantize, int8_io, resolver in VARIANTS:
        path = work / f"{name}_{suffix}"
        if not path.exists():
            export(model, path, quantize=quantize, data=data, int8_io=int8_io, calibration_size=200,
                   min_agreement=0.0, source=keras_path)
        row, = bench.bench([path], data, threads=(threads,), runs=runs, op_resolver=resolver or "auto")["results"]
        if resolver:
            row["name"] += f" ({resolver} resolver)"
        rows.append(row)
    for row in rows:
        row["model"], row["accuracy_meaning"] = name, accuracy_meaning
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="scripts/results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.out)
    work = out / "bench_peers_models"
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cases = [
        digits_case(work),
        random_case("vit_seed", dict(name="vit", patch_size=4, dim=256, depth=4, heads=4, mlp_dim=512,
                                     gelu_approximate=True), (32, 32, 3)),
        random_case("mobilenet_v2_96", dict(name="mobilenet_v2", alpha=0.35), (96, 96, 3)),
    ]
    rows = []
    for case in cases:
        print(f"== {case[0]}", flush=True)
        rows.extend(run_case(*case, work=work, threads=args.threads, runs=args.runs))
    machine = bench.machine_info(args.threads)
    document = {"machine": machine, "seconds": time.perf_counter() - start, "results": rows}
    write_json(out / "bench_peers.json", document)
    sections = [f"Machine: {machine['cpu']}, {machine['cores']} cores, SIMD {', '.join(machine['simd'])}; "
                f"{args.threads} thread(s), batch 1, {args.runs} timed runs after warm-up.\n"]
    for case in cases:
        case_rows = [r for r in rows if r["model"] == case[0]]
        sections.append(f"### {case[0]} — accuracy column: {case[3]}\n\n{results_table(case_rows)}\n")
    (out / "bench_peers.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"done in {document['seconds']:.0f} s")


if __name__ == "__main__":
    main()
