"""Side-by-side runtimes for one model at a time: TensorFlow, LiteRT (fp32, float16, dynamic, int8; quantized by
the converter and by LiteRT Quantizer) and onnxruntime (fp32, its own static int8 QDQ), same test inputs, same
thread count.

Models, all trained here on the embedded digits (nothing is downloaded), so every accuracy is real: the zoo CNN
(8x8), the keras.io ``mnist_convnet`` (28x28), the seed ViT (patch 4, dim 256, depth 4, heads 4, mlp 512 on
32x32x3) and MobileNetV2 (alpha 0.35) at 96x96x3, the last two on digits upscaled and repeated to RGB.

    python scripts/bench_peers.py [--out scripts/results] [--threads 1] [--runs 200]

Writes bench_peers.json and bench_peers.md into --out.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from kerascomp.backend import tf
from kerascomp.training.distribute import limit_threads

limit_threads(1)  # the same thread budget for every runtime

from kerascomp import bench, models, training  # noqa: E402
from kerascomp import data as datasets
from kerascomp.bench.auto import convert_auto  # noqa: E402
from kerascomp.export import export  # noqa: E402
from kerascomp.files import write_json  # noqa: E402
from kerascomp.report import kernel_table, results_table  # noqa: E402
from kerascomp.saving import save_model  # noqa: E402

LQ = "litert-quantizer"
# (file suffix, quantize, int8 io, LiteRT op resolver, fixed batch, backend)
VARIANTS = (
    ("fp32.tflite", "none", False, "auto", None, "converter"),
    ("float16.tflite", "float16", False, "auto", None, "converter"),
    ("dynamic.tflite", "dynamic", False, "auto", None, "converter"),
    ("int8.tflite", "int8", False, "auto", None, "converter"),
    ("int8io.tflite", "int8", True, "auto", None, "converter"),
    ("int8io.tflite", "int8", True, "builtin", None, "converter"),
    ("dynamic@lq.tflite", "dynamic", False, "auto", None, LQ),
    ("int8@lq.tflite", "int8", False, "auto", None, LQ),
    ("int4-weights@lq.tflite", "int4-weights", False, "auto", None, LQ),
    ("fp32_b1.tflite", "none", False, "auto", 1, "converter"),
    ("int8_b1.tflite", "int8", False, "auto", 1, "converter"),
    ("int8@lq_b1.tflite", "int8", False, "auto", 1, LQ),
    ("fp32.onnx", "none", False, None, None, "converter"),
    ("int8.onnx", "int8", False, None, None, "converter"),
)
AUTO_MAX_DROP = 0.5  # pp of validation accuracy


def resized_digits(size: int, channels: int) -> datasets.Dataset:
    """The embedded digits upscaled to ``size`` x ``size``, the grey channel repeated ``channels`` times."""
    digits = datasets.load_data("digits")

    def up(x):
        return np.repeat(tf.image.resize(x, (size, size)).numpy(), channels, axis=-1)

    return datasets.Dataset(name=f"digits {size}x{size}x{channels}", x_train=up(digits.x_train),
                            y_train=digits.y_train, x_val=up(digits.x_val), y_val=digits.y_val,
                            x_test=up(digits.x_test), y_test=digits.y_test, class_names=digits.class_names,
                            scaling=digits.scaling)


def digits_case(work: Path):
    """The zoo CNN trained on digits: real accuracy on the real test split."""
    data = datasets.load_data("digits")
    model, _ = training.train("cnn", data, training.TrainConfig(epochs=30, verbose=0))
    return "digits_cnn", model, data, "test accuracy"


def mnist_convnet_case(work: Path):
    """The keras.io ``mnist_convnet`` architecture, trained as there (Adam, 15 epochs, batch 128) on the embedded
    digits upscaled to 28x28: nothing is downloaded."""
    data = resized_digits(28, channels=1)
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=15, validation_data=(data.x_val, data.y_val),
              verbose=0)
    return "mnist_convnet", model, data, "test accuracy"


def rgb_case(name: str, builder_args: dict, size: int, epochs: int, learning_rate: float):
    """A zoo model trained on digits upscaled to ``size`` x ``size`` and repeated to three channels.

    Batch-norm momentum is set to 0.9, as the zoo CNN's: at 0.999 (tf_keras.applications') the 19 steps per
    epoch leave MobileNetV2's moving statistics far from the data and validation accuracy at chance.
    """
    data = resized_digits(size, channels=3)
    model = models.build(input_shape=(size, size, 3), num_classes=10, **builder_args)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model, _ = training.train(model, data, training.TrainConfig(epochs=epochs, learning_rate=learning_rate, verbose=0))
    return name, model, data, "test accuracy"


def run_case(name, model, data, accuracy_meaning, work: Path, threads: int, runs: int) -> list[dict]:
    keras_path = save_model(model, work / f"{name}.keras")
    rows = bench.bench([keras_path], data, threads=(threads,), runs=runs)["results"]
    for suffix, quantize, int8_io, resolver, batch, backend in VARIANTS:
        path = work / f"{name}_{suffix}"
        if not path.exists():  # the builtin-resolver row reuses the int8io file converted just before
            export(model, path, quantize=quantize, data=data, int8_io=int8_io, calibration_size=200,
                   min_agreement=0.0, source=keras_path, batch_size=batch, backend=backend)
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
        rgb_case("vit_seed", dict(name="vit", patch_size=4, dim=256, depth=4, heads=4, mlp_dim=512,
                                  gelu_approximate=True), 32, epochs=15, learning_rate=1e-3),
        rgb_case("mobilenet_v2_96", dict(name="mobilenet_v2", alpha=0.35), 96, epochs=15, learning_rate=3e-3),
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
