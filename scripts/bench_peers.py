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
import shutil
import time
from pathlib import Path

import numpy as np

from kerascomp._compat import tf

tf.config.threading.set_intra_op_parallelism_threads(1)  # the same thread budget for every runtime
tf.config.threading.set_inter_op_parallelism_threads(1)

from kerascomp import bench, data as datasets, models, training  # noqa: E402
from kerascomp.autoquant import convert_auto  # noqa: E402
from kerascomp._io import write_json  # noqa: E402
from kerascomp.export import export  # noqa: E402
from kerascomp.report import kernel_table, results_table  # noqa: E402
from kerascomp.saving import save_model  # noqa: E402

# (file suffix, quantize, int8 io, LiteRT op resolver, fixed batch)
VARIANTS = (
    ("fp32.tflite", "none", False, "auto", None),
    ("float16.tflite", "float16", False, "auto", None),
    ("dynamic.tflite", "dynamic", False, "auto", None),
    ("int8.tflite", "int8", False, "auto", None),
    ("int8io.tflite", "int8", True, "auto", None),
    ("int8io.tflite", "int8", True, "builtin", None),
    ("fp32_b1.tflite", "none", False, "auto", 1),
    ("int8_b1.tflite", "int8", False, "auto", 1),
    ("fp32.onnx", "none", False, None, None),
    ("int8.onnx", "int8", False, None, None),
)
AUTO_MAX_DROP = 0.5  # pp of validation accuracy (agreement with Keras for the random-init models)


def digits_case(work: Path):
    """The zoo CNN trained on digits: real accuracy on the real test split."""
    data = datasets.load_data("digits")
    model, _ = training.train("cnn", data, training.TrainConfig(epochs=30, verbose=0))
    return "digits_cnn", model, data, "test accuracy"


def mnist_convnet_case(work: Path):
    """The keras.io ``mnist_convnet`` architecture, trained as there (Adam, 15 epochs, batch 128) on the embedded
    digits upscaled to 28x28: nothing is downloaded."""
    digits = datasets.load_data("digits")

    def up(x):
        return tf.image.resize(x, (28, 28)).numpy()

    data = datasets.Dataset(name="digits 28x28", x_train=up(digits.x_train), y_train=digits.y_train,
                            x_val=up(digits.x_val), y_val=digits.y_val, x_test=up(digits.x_test), y_test=digits.y_test,
                            class_names=digits.class_names, scaling=digits.scaling)
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=15, validation_data=(data.x_val, data.y_val),
              verbose=0)
    return "mnist_convnet", model, data, "test accuracy"


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
    for suffix, quantize, int8_io, resolver, batch in VARIANTS:
        path = work / f"{name}_{suffix}"
        if not path.exists():  # the builtin-resolver row reuses the int8io file converted just before
            export(model, path, quantize=quantize, data=data, int8_io=int8_io, calibration_size=200,
                   min_agreement=0.0, source=keras_path, batch_size=batch)
        row, = bench.bench([path], data, threads=(threads,), runs=runs, op_resolver=resolver or "auto")["results"]
        if resolver:
            row["name"] += f" ({resolver} resolver)"
        rows.append(row)
    baseline_val = rows[0]["val_accuracy"]  # the Keras model's
    for batch in (None, 1):  # kerascomp's own choice, as `convert --quantize auto [--batch-size 1]` makes it
        path = work / f"{name}_auto{'_b1' if batch else ''}.tflite"
        choice = convert_auto(model, path, data=data, source=keras_path, baseline_val=baseline_val,
                              max_drop=AUTO_MAX_DROP, threads=threads, runs=runs, calibration_size=200,
                              batch_size=batch, strict=False)
        row, = bench.bench([path], data, threads=(threads,), runs=runs)["results"]
        row["name"] += f" (auto: {choice['chosen']})"
        row["auto"] = {k: choice[k] for k in ("chosen", "met", "candidates")}
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
    shutil.rmtree(work, ignore_errors=True)  # models are retrained every run: no file of an earlier run is reused
    work.mkdir(parents=True)
    start = time.perf_counter()
    cases = [
        digits_case(work),
        mnist_convnet_case(work),
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
        sections.append(f"### {case[0]} — accuracy column: {case[3]}\n\n{results_table(case_rows)}\n\n"
                        f"{kernel_table(case_rows)}\n")
    (out / "bench_peers.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"done in {document['seconds']:.0f} s")


if __name__ == "__main__":
    main()
