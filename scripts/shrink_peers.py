"""Structured shrinking against the other routes to a smaller file: what the device feels, side by side.

Per model, all through the CLI as a user runs it, converted to float32 and int8 and benchmarked in
one ``kerascomp bench`` call (LiteRT, 1 thread, batch 1), so every latency of a table comes from
one run on one machine:

- ``unpruned``: the model itself;
- ``shrink``: ``shrink --max-drop 1.0 --target macs`` (channels, units and heads cut, then fine-tuned with
  the input as teacher), once per seed, on the model's own data split;
- ``prune``: unstructured ``prune --max-drop 1.0`` (zeros that gzip removes), seed 0;
- ``student``: (CIFAR only) the zoo student of the student-size table whose parameter count is nearest
  the shrunk models'; its accuracy is that table's distilled mean over 3 seeds, its bytes and latency
  are measured here on a file of the same architecture;
- ``xnnpack-sparse``: tfmot's ``PruneForLatencyOnXNNPack`` + the converter's sparse encoding, where
  tfmot accepts the model (otherwise its refusal is recorded).

Cases: the CIFAR-10-subset CNN teacher of ``student_sizes_cifar10.py`` (``cifar``), and, trained on
the embedded digits as ``bench_peers.py`` does, the keras.io ``mnist_convnet``, MobileNetV2-0.35 at
96x96 (depthwise + residual), the seed ViT (heads + MLP units) and a Keras 3 Functional model with
BatchNormalization and a residual Add built outside kerascomp (``shapes``).

Techniques run through :func:`kerascomp.compress_file` (what the commands call) on the split each
model was trained on (seed 0), the technique seeded 0-2: the CLI's ``--seed`` would also redraw the
validation split, and a split the model trained on makes its baseline a training accuracy. The test
split is fixed and never read by a search.

Development benchmark only: the CIFAR data is ``../shared/data/cifar10_subset.npz``, which users do
not have.

    python scripts/shrink_peers.py --data ../shared/data/cifar10_subset.npz [--teacher T.keras]
        [--cases cifar,shapes] [--seeds 0,1,2] [--runs 1000] [--out scripts/results]

Writes shrink_peers.json and shrink_peers.md into --out (models under --out/shrink_peers_work).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

import numpy as np
from _cli import run, write_results

from kerascomp import data as datasets
from kerascomp import models, training
from kerascomp.backend import tf
from kerascomp.bench import machine_info
from kerascomp.errors import KerascompError
from kerascomp.files import write_json
from kerascomp.pipeline import compress_file
from kerascomp.pipeline.runner import config_from
from kerascomp.saving import save_model

TEACHER = ("--model", "cnn", "--model-arg", "width=64", "--model-arg", "depth=3")
MAX_DROP = 1.0
PRECISIONS = ("none", "int8")


def cli(*args) -> None:
    if run(*map(str, args)):
        raise SystemExit(f"kerascomp {args[0]} failed")


def converted(model: Path, data: str, *extra) -> list[Path]:
    """The float32 and int8 files of ``model`` (kept from an earlier run of the script)."""
    paths = []
    for quantize in PRECISIONS:
        path = model.with_name(f"{model.stem}_{'fp32' if quantize == 'none' else quantize}.tflite")
        if not path.exists():
            cli("convert", model, "--quantize", quantize, *_data_options(data), *extra, "--out", path)
        paths.append(path)
    return paths


def compressed(technique: str, model: Path, data: str, seed: int, **options) -> tuple[Path | None, dict]:
    """``TECHNIQUE --max-drop 1.0`` with ``seed`` on the data split as the model was trained (seed 0): the file and
    its metrics (with the search record), or no file and the refusal when no strength holds the budget (recorded,
    so a rerun does not search again).

    The Python call, not the CLI: the CLI's ``--seed`` also draws the validation split, and a split the model
    trained on makes its baseline a training accuracy.
    """
    out = model.with_name(f"{model.stem}_{technique}_s{seed}.keras")
    record, refused = out.with_suffix(".json"), out.with_suffix(".refused")
    if refused.exists():
        return None, {"refused": refused.read_text()}
    if not out.exists():
        print(f"$ {technique} {model.name} --max-drop {MAX_DROP} seed={seed} {options}", flush=True)
        config = config_from(technique, {"max_drop": MAX_DROP, "seed": seed, **options})
        try:
            metrics = compress_file(technique, model, _split(data), config, out, echo=print)
        except KerascompError as error:
            refused.write_text(str(error))
            return None, {"refused": str(error)}
        write_json(record, metrics)
    return out, json.loads(record.read_text())


@functools.cache
def _split(data: str):
    """The split every model here was trained on (seed 0), with its validation share (:func:`_val_fraction`)."""
    return datasets.load_data(data, val_fraction=_val_fraction(data))


def _val_fraction(data: str) -> float:
    """A quarter of the digits' training images (337) for validation, a tenth of CIFAR's (1,000).

    With a tenth of the digits (135 images, 0.74 pp each) the budget search
    read noise: MobileNetV2 passed at 0.74 pp on validation and lost 4-7 pp on
    the test split.
    """
    return 0.25 if Path(data).name.startswith("digits") else 0.1


def _data_options(data: str) -> tuple:
    return "--data", data, "--val-fraction", _val_fraction(data)


def xnnpack_sparse(model_path: Path, data: str) -> tuple[Path | None, str]:
    """tfmot's latency pruning policy + sparse encoding, or why tfmot refuses the model."""
    import tensorflow_model_optimization as tfmot

    from kerascomp.saving import load_with_data

    out = model_path.with_name(f"{model_path.stem}_xnnpack_sparse_fp32.tflite")
    if out.exists():
        return out, "applied"
    model, _, dataset = load_with_data(model_path, _split(data))
    sparsity = tfmot.sparsity.keras
    clone = tf.keras.models.clone_model(model)  # pruning masks the weights it wraps in place
    clone.set_weights(model.get_weights())
    try:
        pruned = sparsity.prune_low_magnitude(
            clone, pruning_policy=sparsity.PruneForLatencyOnXNNPack(),
            pruning_schedule=sparsity.PolynomialDecay(0.0, 0.75, 0, 8 * len(dataset.y_train) // 64))
    except ValueError as error:
        return None, f"tfmot refuses: {str(error).splitlines()[0]}"
    logits = model.layers[-1].get_config().get("activation") != "softmax"
    pruned.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
                   metrics=["accuracy"])
    pruned.fit(dataset.x_train, dataset.y_train, batch_size=64, epochs=10, verbose=2,
               callbacks=[sparsity.UpdatePruningStep()])
    converter = tf.lite.TFLiteConverter.from_keras_model(sparsity.strip_pruning(pruned))
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    out.write_bytes(converter.convert())
    return out, "applied"


def case(name: str, model: Path, data: str, seeds: list[int], runs: int, student: dict | None = None,
         routes_wanted: tuple[str, ...] = ("shrink", "prune")) -> dict:
    """Every route for one model, then one bench call over all their files."""
    routes = {"unpruned": [(None, converted(model, data))]}
    searches = {}
    for technique, options, route_seeds in (("shrink", {"target": "macs"}, seeds), ("prune", {}, [0] if 0 in seeds else [])):
        if technique not in routes_wanted:
            continue
        for seed in route_seeds:
            out, metrics = compressed(technique, model, data, seed, **options)
            if out is not None:
                routes.setdefault(technique, []).append((seed, converted(out, data)))
            searches.setdefault(technique, []).append({"seed": seed, **_search_record(metrics)})
    if student:
        # an untrained stand-in of the student's shape: its bytes and latency, not its predictions, are read
        routes["student"] = [(None, converted(student["path"], data, "--min-agreement", 0))]
    sparse, sparse_note = xnnpack_sparse(model, data)
    if sparse:
        routes["xnnpack-sparse"] = [(None, [sparse])]
    files = [p for runs_ in routes.values() for _, paths in runs_ for p in paths]
    bench_json = model.with_name(f"{name}_bench.json")
    cli("bench", *files, *_data_options(data), "--runs", runs, "--json", bench_json)
    rows = {Path(r["path"]).name: r for r in json.loads(bench_json.read_text())["results"]}
    table = []
    for route, seeded in routes.items():
        for index, precision in enumerate(("fp32", "int8")):
            picked = [rows[paths[index].name] for _, paths in seeded if index < len(paths)]
            if picked:
                table.append(_mean_row(route, precision, picked, student if route == "student" else None))
    return {"name": name, "model": str(model), "rows": table, "searches": searches, "xnnpack_sparse": sparse_note}


def _search_record(metrics: dict) -> dict:
    search = metrics.get("search", {})
    return {"chosen": search.get("chosen"), "refused": metrics.get("refused"), "tries": [(t["strength"], round(t["drop_pp"], 2), t["passed"])
                                                      for t in search.get("tries", [])],
            "groups": [g for g in metrics.get("groups", []) if g["kept"] < g["channels"]],
            "unfollowed": metrics.get("unfollowed", {})}


def _mean_row(route: str, precision: str, rows: list[dict], student: dict | None) -> dict:
    def mean_sd(key):
        values = [r[key] for r in rows]
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)

    p50 = [r["latency_ms"]["p50"] for r in rows]
    accuracy = (student["accuracy"], student["accuracy_sd"]) if student else mean_sd("accuracy")
    return {"route": route, "precision": precision, "n": len(rows), "params": rows[0]["params"],
            "size_bytes": mean_sd("size_bytes")[0], "gzip_bytes": mean_sd("gzip_bytes")[0],
            "macs": statistics.mean(r["macs"] for r in rows),
            "peak_activation_bytes": statistics.mean(r["peak_activation_bytes"] for r in rows),
            "accuracy": accuracy[0], "accuracy_sd": accuracy[1], "accuracy_from_table": bool(student),
            "p50_ms": statistics.mean(p50), "p50_sd": statistics.stdev(p50) if len(p50) > 1 else None}


def markdown(cases: list[dict], machine: dict, runs: int) -> str:
    lines = [(f"Machine: {machine['cpu']}, {machine['cores']} cores, SIMD {', '.join(machine['simd'])}; LiteRT, "
             f"1 thread, batch 1, p50 of {runs} runs; all files of a case timed in one `kerascomp bench` call."), ""]
    for c in cases:
        lines += [f"### {c['name']}", "",
                  ("| route | precision | seeds | params | file KB | gzip KB | MACs | peak act. KB | test accuracy "
                  "| p50 ms | p50 vs unpruned | bytes vs unpruned |"), "|---" * 12 + "|"]
        base = {r["precision"]: r for r in c["rows"] if r["route"] == "unpruned"}
        for r in c["rows"]:
            b = base[r["precision"]] if r["precision"] in base else base["fp32"]
            accuracy = f"{100 * r['accuracy']:.2f} %" + (f" ± {100 * r['accuracy_sd']:.2f}" if r["accuracy_sd"] else "")
            accuracy += " (table)" if r["accuracy_from_table"] else ""
            lines.append(f"| {r['route']} | {r['precision']} | {r['n']} | {r['params']:,} | {r['size_bytes'] / 1024:.1f} "
                         f"| {r['gzip_bytes'] / 1024:.1f} | {r['macs']:,.0f} | {r['peak_activation_bytes'] / 1024:.1f} "
                         f"| {accuracy} | {r['p50_ms']:.4f} | {b['p50_ms'] / r['p50_ms']:.2f}x "
                         f"| {b['size_bytes'] / r['size_bytes']:.2f}x |")
        lines.append("")
        for technique, records in c["searches"].items():
            for s in records:
                tries = ", ".join(f"{v}: {d:+.2f} pp {'pass' if ok else 'fail'}" for v, d, ok in s["tries"])
                outcome = s["refused"] or f"chose {s['chosen']} ({tries})"
                lines.append(f"- {technique} seed {s['seed']}: {outcome}")
        shrunk = c["searches"].get("shrink", [{}])[0]
        if shrunk.get("groups"):
            lines.append("- groups cut (seed " f"{shrunk['seed']}): " + "; ".join(
                f"{'+'.join(g['producers']) or '-'} {g['kept']}/{g['channels']}" for g in shrunk["groups"]))
        for layer, why in shrunk.get("unfollowed", {}).items():
            lines.append(f"- left whole: {layer}: {why}")
        lines += [f"- xnnpack-sparse: {c['xnnpack_sparse']}", ""]
    return "\n".join(lines)


def plot(cases: list[dict], path: Path) -> None:
    """Per case, test accuracy against p50 latency: one marker per route, float32 hollow, int8 filled."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    from kerascomp.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.4), constrained_layout=True, squeeze=False)
    markers = {"unpruned": "o", "shrink": "s", "prune": "^", "student": "D", "xnnpack-sparse": "v"}
    for ax, c in zip(axes[0], cases):
        for i, route in enumerate(markers):
            for r in (r for r in c["rows"] if r["route"] == route):
                ax.errorbar(r["p50_ms"], 100 * r["accuracy"], yerr=100 * (r["accuracy_sd"] or 0), color=f"C{i}",
                            marker=markers[route], mfc=f"C{i}" if r["precision"] == "int8" else "white",
                            capsize=2, label=f"{route} {r['precision']}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(c["name"], fontsize=9)
        ax.set_xlabel("p50 ms (LiteRT, 1 thread)")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("test accuracy %")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    save_figure(fig, path)


# ---- the cases -------------------------------------------------------------------------------------------

def cifar_case(args, work: Path, seeds: list[int]) -> dict:
    teacher = Path(args.teacher) if args.teacher else work / "cifar_cnn.keras"
    if not teacher.exists():
        cli("train", *TEACHER, "--data", args.data, "--augment", "crop,flip", "--epochs", 60, "--patience", 0,
            "--out", teacher)
    student = _nearest_student(args, work, teacher, seeds)
    return case("cifar_cnn", teacher, args.data, seeds, args.runs, student, tuple(args.routes.split(",")))


def _nearest_student(args, work: Path, teacher: Path, seeds: list[int]) -> dict | None:
    """The student-size table's row nearest the shrunk models' parameters, as an untrained file of that shape."""
    sizes = Path(args.out) / "student_sizes_cifar10.json"
    shrunk = _shrink_records(work, teacher)
    if not sizes.exists():
        return None
    if not shrunk:  # the shrunk models come first; their size picks the student
        for seed in seeds:
            compressed("shrink", teacher, args.data, seed, target="macs")
        shrunk = _shrink_records(work, teacher)
    params = statistics.mean(m["after"]["params"] for m in shrunk)
    row = min(json.loads(sizes.read_text())["rows"], key=lambda r: abs(np.log(r["params"] / params)))
    path = work / f"student_w{row['width']}.keras"
    if not path.exists():
        data = _split(args.data)
        save_model(models.build("cnn", input_shape=data.input_shape, num_classes=data.num_classes,
                                width=row["width"], depth=3), path)
    return {"path": path, "accuracy": row["distilled"], "accuracy_sd": row["distilled_sd"]}


def _shrink_records(work: Path, teacher: Path) -> list[dict]:
    """The metrics of every shrink seed done (``…_shrink_s<seed>.json``, not the sidecars of its files)."""
    return [json.loads(p.read_text()) for p in work.glob(f"{teacher.stem}_shrink_s*.json")
            if p.stem.rpartition("_s")[2].isdigit()]


def shape_cases(args, work: Path, seeds: list[int], names: list[str]) -> list[dict]:
    results = []
    for name, build, size, channels, epochs, lr in SHAPES:
        if "shapes" not in names and name not in names:
            continue
        npz = work / f"digits{size}x{channels}.npz"
        if not npz.exists():
            _resized_digits(npz, size, channels)
        path = work / f"{name}.keras"
        if not path.exists():
            build(path, _split(str(npz)), epochs, lr)
        results.append(case(name, path, str(npz), seeds, args.runs, routes_wanted=tuple(args.routes.split(","))))
    return results


def _resized_digits(path: Path, size: int, channels: int) -> None:
    """The embedded digits (scaled to 0..1) upscaled to ``size``, the grey channel repeated ``channels`` times."""
    digits = datasets.load_data("digits")
    x = np.concatenate([digits.x_train, digits.x_val])
    y = np.concatenate([digits.y_train, digits.y_val])

    def up(images):
        return np.repeat(tf.image.resize(images, (size, size)).numpy(), channels, axis=-1).astype(np.float32)

    np.savez(path, x_train=up(x), y_train=y, x_test=up(digits.x_test), y_test=digits.y_test)


def _mnist_convnet(path: Path, data, epochs: int, lr: float) -> None:
    """The keras.io ``mnist_convnet``, trained as there (Adam, batch 128)."""
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input(data.input_shape), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=128, epochs=epochs, validation_data=(data.x_val, data.y_val),
              verbose=2)
    save_model(model, path)


def _zoo(**builder_args):
    def build(path: Path, data, epochs: int, lr: float) -> None:
        model = models.build(input_shape=data.input_shape, num_classes=10, **builder_args)
        for layer in model.layers:  # 0.999 leaves the moving statistics far from the data in few steps
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = 0.9
        model, _ = training.train(model, data, training.TrainConfig(epochs=epochs, learning_rate=lr, verbose=2))
        save_model(model, path)
    return build


def _keras3_bn_add(path: Path, data, epochs: int, lr: float) -> None:
    """A Keras 3 Functional model with BatchNormalization and a residual Add, saved with ``model.save``."""
    import keras as keras3

    L = keras3.layers
    keras3.utils.set_random_seed(0)
    inp = keras3.Input(data.input_shape)
    h = L.Activation("relu")(L.BatchNormalization(momentum=0.9)(L.Conv2D(32, 3, padding="same")(inp)))
    r = L.Activation("relu")(L.BatchNormalization(momentum=0.9)(L.Conv2D(32, 3, padding="same")(h)))
    h = L.MaxPooling2D()(L.Add()([h, L.Conv2D(32, 3, padding="same")(r)]))
    h = L.Conv2D(64, 3, padding="same", activation="relu")(h)
    out = L.Dense(10, activation="softmax")(L.Dense(64, activation="relu")(L.GlobalAveragePooling2D()(h)))
    model = keras3.Model(inp, out)
    model.compile(optimizer=keras3.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=32, epochs=epochs, validation_data=(data.x_val, data.y_val),
              verbose=2)
    model.save(path)


# (name, builder, input size, channels, epochs, learning rate)
SHAPES = (
    ("mnist_convnet", _mnist_convnet, 28, 1, 15, 1e-3),
    ("mobilenet_v2_96", _zoo(name="mobilenet_v2", alpha=0.35), 96, 3, 15, 3e-3),
    ("vit_seed", _zoo(name="vit", patch_size=4, dim=256, depth=4, heads=4, mlp_dim=512, gelu_approximate=True),
     32, 3, 15, 1e-3),
    ("keras3_bn_add", _keras3_bn_add, 16, 1, 30, 3e-3),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="The CIFAR-10 subset .npz (case 'cifar')")
    parser.add_argument("--teacher", help="A trained CIFAR teacher .keras (default: train one, ~45 min on 2 cores)")
    parser.add_argument("--cases", default="cifar,shapes", help="cifar, shapes (all four), or shape names")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--routes", default="shrink,prune", help="The trained routes to run (a partial table: fewer)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--out", default="scripts/results")
    args = parser.parse_args()
    work = Path(args.out) / "shrink_peers_work"
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    cases = args.cases.split(",")
    results = []
    if "cifar" in cases:
        if not args.data:
            raise SystemExit("--data: the CIFAR-10 subset .npz is needed for the 'cifar' case")
        results.append(cifar_case(args, work, seeds))
    results.extend(shape_cases(args, work, seeds, cases))
    machine = machine_info(1)
    stem = "shrink_peers" if cases == ["cifar", "shapes"] else "shrink_peers_" + "_".join(cases)
    write_results(Path(args.out), stem, {"machine": machine, "cases": results}, markdown(results, machine, args.runs))
    plot(results, Path(args.out) / f"{stem}.png")


if __name__ == "__main__":
    main()
