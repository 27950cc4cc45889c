"""The ``kerascomp`` command line: one thin command per stage over the library.

Commands parse options, call the library and print a summary; they hold no
logic of their own. TensorFlow is imported inside commands only, so
``kerascomp --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import os
import sys

import click
import yaml

from kerascomp import __version__
from kerascomp.errors import KerascompError, first_line

__all__ = ["cli", "main"]


def _parse_value(text: str) -> object:
    """YAML scalars (``3``, ``0.5``, ``true``, ``imagenet``); a comma makes a tuple (``hidden=600,600``)."""
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_key_values(pairs: tuple[str, ...], option: str) -> dict:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects key=value, got {pair!r}")
        parsed[key.strip()] = _parse_value(value.strip())
    return parsed


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise click.UsageError(f"--image-size expects HxW or N, got {text!r}") from None
    return (size[0], size[0]) if len(size) == 1 else size


def _data_options(fn=None, *, default: str | None = "digits"):
    """Options shared by every command that loads a dataset."""
    if fn is None:
        return lambda f: _data_options(f, default=default)
    for option in reversed([
        click.option("--data", "data_spec", default=default, show_default=default is not None,
                     help="digits | FILE.npz | FOLDER/ | tfds:NAME"),
        click.option("--val-fraction", default=0.1, show_default=True, type=float,
                     help="Share of the training data held out for validation."),
        click.option("--image-size", default=None, help="Resize folder images to HxW (e.g. 32x32)."),
        click.option("--color-mode", default="rgb", show_default=True, type=click.Choice(["rgb", "grayscale"]),
                     help="Channels for folder images."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for splits, initialisation and shuffling."),
    ]):
        fn = option(fn)
    return fn


def _load_data(data_spec, val_fraction, image_size, color_mode, seed):
    if data_spec is None:
        return None
    from kerascomp.data import load_data

    return load_data(data_spec, val_fraction=val_fraction, seed=seed,
                     image_size=_parse_size(image_size), color_mode=color_mode)


def _model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed):
    """A model file of any format, its metadata, and the data in the input scaling the model expects."""
    from kerascomp.saving import load

    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
    model, meta = load(model_path, data)
    scaling = meta.get("data", {}).get("scaling")
    return model, meta, (data.with_scaling(scaling) if data is not None and scaling else data)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kerascomp")
def cli() -> None:
    """Compress tf_keras models and measure the artifacts that ship.

    Stages: train -> distill -> swap -> prune / cluster -> qat -> convert -> bench -> report.
    """


@cli.command()
@click.option("--model", "model_name", required=True, help="Zoo model name (see `kerascomp models`).")
@click.option("--model-arg", multiple=True, metavar="K=V", help="Model argument, repeatable (e.g. width=16, hidden=600,600).")
@_data_options
@click.option("--epochs", default=30, show_default=True, type=int)
@click.option("--batch-size", default=64, show_default=True, type=int, help="Global batch size.")
@click.option("--learning-rate", default=3e-3, show_default=True, type=float, help="Peak AdamW learning rate.")
@click.option("--patience", default=10, show_default=True, type=int, help="Early-stopping patience on val loss (0: off).")
@click.option("--strategy", default="default", show_default=True, type=click.Choice(["default", "mirrored", "multiworker"]))
@click.option("--mixed-precision", is_flag=True, help="mixed_float16 on GPU, mixed_bfloat16 on CPU; saved model is float32.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to save the trained FILE.keras.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics as JSON here.")
def train(model_name, model_arg, data_spec, val_fraction, image_size, color_mode, seed, epochs, batch_size,
          learning_rate, patience, strategy, mixed_precision, out, json_path):
    """Train a zoo model (teacher or baseline) on a dataset."""
    from kerascomp import models, training
    from kerascomp._io import write_json
    from kerascomp.saving import check_output_path, save_model

    check_output_path(out, ".keras")
    model_args = _parse_key_values(model_arg, "--model-arg")
    models.check_args(model_name, model_args)
    config = training.TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience,
                                  seed=seed, strategy=strategy, mixed_precision=mixed_precision)
    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
    click.echo(f"data {data.name}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
               f"input {data.input_shape}, {data.num_classes} classes")
    model, metrics = training.train(model_name, data, config, model_args=model_args)
    metrics = {"model": {"name": model_name, "args": model_args}, **metrics, "data": data.describe()}
    save_model(model, out, meta={"model": metrics["model"], "data": data.describe()})
    if json_path:
        write_json(json_path, metrics)
    click.echo(f"test accuracy {metrics['test_accuracy']:.4f} (val {metrics['val_accuracy']:.4f}), "
               f"{metrics['params']:,} params, {metrics['seconds_per_epoch']:.2f} s/epoch over {metrics['epochs']} epochs "
               f"-> {out}")


@cli.command()
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="FILE.tflite or FILE.onnx [default: tflite_models/<model>_<mode>.tflite].")
@click.option("--quantize", default="none", show_default=True,
              type=click.Choice(["none", "dynamic", "int8", "float16", "int16x8"]))
@_data_options(default=None)
@click.option("--int8-io", is_flag=True, help="int8 input and output tensors (with --quantize int8).")
@click.option("--calibration-size", default=500, show_default=True, type=int,
              help="Training examples used to calibrate int8/int16x8.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset.")
@click.option("--min-agreement", type=float, help="Lowest accepted top-1 agreement with the Keras model.")
def convert(model_path, out, quantize, data_spec, val_fraction, image_size, color_mode, seed, int8_io,
            calibration_size, opset, min_agreement):
    """Convert a .keras model to .tflite or .onnx and verify it against the model."""
    from kerascomp.export import default_output, export

    model, meta, data = _model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed)
    out = out or default_output(model_path, quantize)
    report = export(model, out, quantize=quantize, data=data, meta=meta, int8_io=int8_io,
                    calibration_size=calibration_size, opset=opset, min_agreement=min_agreement, source=model_path)
    check = report["verification"]
    diffs = f", max |dlogit| {check['max_abs_diff']:.2g}, mean {check['mean_abs_diff']:.2g}"
    click.echo(f"verified on {check['samples']} {'validation' if data else 'random'} inputs: top-1 agreement "
               f"{check['top1_agreement']:.1%}{diffs}")
    click.echo(f"{quantize} -> {out} ({report['size_bytes'] / 1024:.1f} KB)")


@cli.command()
@click.argument("artifact", metavar="FILE.tflite", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_NPZ...")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=1, show_default=True, type=int)
def predict(artifact, inputs, top_k, threads):
    """Classify image files (PNG/JPG) or the x_test/x array of an .npz with the edge runtime."""
    import numpy as np

    from kerascomp import runtime
    from kerascomp._images import read_inputs
    from kerascomp.errors import DataError

    model = runtime.load(artifact, threads=threads)
    for name, raw in read_inputs(inputs, model.input_shape, warn=lambda m: click.echo(f"warning: {m}", err=True)):
        if not np.isfinite(raw).all():
            raise DataError(f"{name} holds NaN or Inf values")
        labels = model.classify(raw[None], top_k=top_k)[0]
        click.echo(f"{name}: " + ", ".join(f"{label} {p:.3f}" for label, p in labels))


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT...")
@_data_options
@click.option("--threads", default="1", show_default=True, help="Thread counts, comma separated (e.g. 1,2).")
@click.option("--runs", default=200, show_default=True, type=int, help="Timed batch-1 calls per artifact.")
@click.option("--warmup", default=20, show_default=True, type=int)
@click.option("--op-resolver", default="auto", show_default=True, type=click.Choice(["auto", "builtin", "reference"]),
              help="LiteRT kernels: auto (XNNPACK delegate), builtin, reference.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the trade-off plot (PNG) here.")
def bench(artifacts, data_spec, val_fraction, image_size, color_mode, seed, threads, runs, warmup, op_resolver,
          json_path, plot_path):
    """Benchmark .keras/.tflite/.onnx artifacts: size, gzip, params, accuracy, latency."""
    from kerascomp import bench as benchmark
    from kerascomp._io import write_json
    from kerascomp.report import plot_tradeoff, results_table

    thread_counts = _parse_value(threads)
    thread_counts = thread_counts if isinstance(thread_counts, tuple) else (thread_counts,)
    if not all(isinstance(t, int) for t in thread_counts):
        raise click.UsageError(f"--threads expects integers like 1,2, got {threads!r}")
    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
    document = benchmark.bench(artifacts, data, threads=thread_counts, runs=runs, warmup=warmup, op_resolver=op_resolver)
    click.echo(results_table(document["results"]))
    if json_path:
        write_json(json_path, document)
    if plot_path:
        plot_tradeoff(document["results"], plot_path)


@cli.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (models, artifacts, report).")
@click.option("--resume", is_flag=True, help="Skip stages whose inputs and options are unchanged.")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a config value, repeatable (e.g. stages.1.prune.sparsity=0.9).")
def run(config_path, out, resume, overrides):
    """Run a compression pipeline from a YAML config and write its report."""
    from kerascomp.config import load_config
    from kerascomp.pipeline import run_pipeline

    document = run_pipeline(load_config(config_path, overrides), out, resume=resume)
    summary = document["summary"]
    if "gzip_ratio" in summary:
        click.echo(f"{summary['final']} vs {summary['baseline']}: {summary['gzip_ratio']:.1f}x smaller (gzip), "
                   f"{summary['latency_ratio']:.2f}x latency ratio, {summary['accuracy_drop_pp']:+.2f} pp accuracy drop")
    click.echo(f"report -> {out}/report.md")


@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
def report(run_dir):
    """Re-render DIR/report.md and its plots from DIR/report.json."""
    from kerascomp._pipeline_report import render

    click.echo(f"report -> {render(run_dir)}")


def _budget_options(fn):
    """Training-budget options of the distill and sweep commands (the scratch student gets the same)."""
    for option in reversed([
        click.option("--epochs", default=150, show_default=True, type=int),
        click.option("--batch-size", default=64, show_default=True, type=int, help="Global batch size."),
        click.option("--learning-rate", default=3e-3, show_default=True, type=float, help="Peak AdamW learning rate."),
        click.option("--patience", default=0, show_default=True, type=int,
                     help="Early-stopping patience on val loss (0: off, a patient teacher trains to the end)."),
        click.option("--strategy", default="default", show_default=True,
                     type=click.Choice(["default", "mirrored", "multiworker"])),
        click.option("--mixed-precision", is_flag=True, help="mixed_float16 on GPU, mixed_bfloat16 on CPU."),
    ]):
        fn = option(fn)
    return fn


def _distill_options(fn):
    """Distillation settings; unset ones take DistillConfig's defaults."""
    for option in reversed([
        click.option("--temperature", type=float, help="Softmax temperature T > 0 [default: 8]."),
        click.option("--alpha", type=float, help="Weight of the hard-label loss, in [0, 1] [default: 0, pure KD]."),
        click.option("--augment", help="none, or a comma list of flip, crop, shift, rotation, randaugment, mixup, "
                                       "cutmix; teacher and student see the same augmented batch [default: none]."),
        click.option("--teacher-cache/--no-teacher-cache", default=None,
                     help="Run the teacher once and reuse its logits [default: on without augmentation]."),
        click.option("--hint", "hints", multiple=True, metavar="T_LAYER:S_LAYER",
                     help="Feature distillation: match student layer S_LAYER to teacher layer T_LAYER, repeatable."),
        click.option("--hint-weight", type=float, help="Weight of each hint's MSE [default: 1.0]."),
    ]):
        fn = option(fn)
    return fn


def _distill_config(temperature, alpha, augment, teacher_cache, hints, hint_weight):
    from kerascomp.compress.distill import DistillConfig

    given = {"temperature": temperature, "alpha": alpha, "augment": augment, "teacher_cache": teacher_cache,
             "hints": hints or None, "hint_weight": hint_weight}
    return DistillConfig(**{k: v for k, v in given.items() if v is not None})


def _train_config(epochs, batch_size, learning_rate, patience, seed, strategy, mixed_precision):
    from kerascomp.training import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, patience=patience,
                       seed=seed, strategy=strategy, mixed_precision=mixed_precision)


@cli.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False), help="Trained teacher .keras.")
@click.option("--student", "student_name", required=True, help="Zoo model name of the student.")
@click.option("--student-arg", multiple=True, metavar="K=V", help="Student model argument, repeatable (e.g. width=4).")
@_data_options
@_distill_options
@_budget_options
@click.option("--compare-scratch", is_flag=True, help="Also train the student from scratch with the same budget.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to save the student FILE.keras.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics as JSON here.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Write training-curve, epoch-time and "
              "confusion-matrix PNGs to this folder.")
def distill(teacher_path, student_name, student_arg, data_spec, val_fraction, image_size, color_mode, seed,
            temperature, alpha, augment, teacher_cache, hints, hint_weight, epochs, batch_size, learning_rate,
            patience, strategy, mixed_precision, compare_scratch, out, json_path, plots_dir):
    """Distil a teacher into a smaller zoo student (optionally compared with the student from scratch)."""
    from kerascomp import models
    from kerascomp._io import write_json
    from kerascomp.compress import distill as distillation
    from kerascomp.saving import check_output_path, save_model

    check_output_path(out, ".keras")
    config = _distill_config(temperature, alpha, augment, teacher_cache, hints, hint_weight)
    train_config = _train_config(epochs, batch_size, learning_rate, patience, seed, strategy, mixed_precision)
    student_args = _parse_key_values(student_arg, "--student-arg")
    models.check_args(student_name, student_args)
    teacher, _, data = _model_and_data(teacher_path, data_spec, val_fraction, image_size, color_mode, seed)
    distillation.check_compatible(teacher, models.build(student_name, data.input_shape, data.num_classes,
                                                        **student_args), data)
    student, metrics = distillation.apply(student_name, data, config, teacher=teacher, train_config=train_config,
                                          student_args=student_args, compare_scratch=compare_scratch)
    metrics = {"teacher": teacher_path, "student_model": {"name": student_name, "args": student_args}, **metrics,
               "data": data.describe()}
    save_model(student, out, meta={"model": metrics["student_model"], "data": data.describe(),
                                   "distilled_from": teacher_path})
    if json_path:
        write_json(json_path, metrics)
    if plots_dir:
        distillation.write_plots(student, metrics, data, plots_dir)
    click.echo(f"teacher {metrics['teacher_accuracy']:.4f} ({metrics['teacher_params']:,} params) -> student "
               f"{metrics['student_accuracy']:.4f} ({metrics['student_params']:,} params) -> {out}")
    if compare_scratch:
        gap = metrics["gap_closed"]
        click.echo(f"scratch {metrics['scratch_accuracy']:.4f}; gap closed "
                   f"{'n/a (scratch matches the teacher)' if gap is None else f'{gap:.2f}'}; s/epoch distilled "
                   f"{metrics['student_seconds_per_epoch']:.2f}, scratch {metrics['scratch_seconds_per_epoch']:.2f}")


@cli.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False), help="Trained teacher .keras.")
@_data_options
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2",
              help="Values to sweep, repeatable: temperature, alpha, augment, hint_weight or student.<arg>.")
@click.option("--student", "student_name", default="cnn", show_default=True, help="Zoo model name of the student.")
@click.option("--student-arg", multiple=True, metavar="K=V", help="Fixed student argument, repeatable.")
@_distill_options
@_budget_options
@click.option("--no-scratch", is_flag=True, help="Skip the from-scratch runs.")
@click.option("--out", "out_dir", default="sweep", show_default=True, type=click.Path(file_okay=False),
              help="Folder for sweep.json (the resumable state), sweep.md and sweep.png.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="State/results JSON [default: OUT/sweep.json].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Plot PNG [default: OUT/sweep.png].")
def sweep(teacher_path, data_spec, val_fraction, image_size, color_mode, seed, grid, student_name, student_arg,
          temperature, alpha, augment, teacher_cache, hints, hint_weight, epochs, batch_size, learning_rate, patience,
          strategy, mixed_precision, no_scratch, out_dir, json_path, plot_path):
    """Sweep distillation settings and student sizes (resumable): how much smaller can the student be?"""
    from pathlib import Path

    from kerascomp._io import atomic_path
    from kerascomp.compress import sweep as sweeping
    from kerascomp.report import plot_sweep

    grid_values = sweeping.parse_grid(_parse_key_values(grid, "--grid"))
    config = _distill_config(temperature, alpha, augment, teacher_cache, hints, hint_weight)
    train_config = _train_config(epochs, batch_size, learning_rate, patience, seed, strategy, mixed_precision)
    teacher, _, data = _model_and_data(teacher_path, data_spec, val_fraction, image_size, color_mode, seed)
    out = Path(out_dir)
    json_path, plot_path = Path(json_path or out / "sweep.json"), Path(plot_path or out / "sweep.png")
    state = sweeping.sweep(teacher, data, grid_values, json_path, student=student_name,
                           student_args=_parse_key_values(student_arg, "--student-arg"), train_config=train_config,
                           distill=config, compare_scratch=not no_scratch, progress=click.echo)
    table = sweeping.sweep_table(state)
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(table + "\n")
    plot_sweep(state["points"], plot_path, teacher_accuracy=state["teacher_accuracy"])
    click.echo(table)
    click.echo(f"-> {json_path}, {out / 'sweep.md'}, {plot_path}")


@cli.command()
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@_data_options
@click.option("--tolerance", default=1.0, show_default=True, type=float,
              help="Largest accepted drop of validation accuracy below the original (percentage points).")
@click.option("--epochs-per-block", default=1, show_default=True, type=int,
              help="End-to-end distillation epochs per replacement (0: local fit only).")
@click.option("--order", default="forward", show_default=True,
              type=click.Choice(["forward", "backward", "cheapest-first"]))
@click.option("--blocks", "blocks_regex", metavar="REGEX",
              help="Layer-name regex defining blocks; the match (or its first group) names the block.")
@click.option("--candidates", help="Replacements to try, comma separated (default: every one that fits).")
@click.option("--fit-samples", default=2048, show_default=True, type=int,
              help="Training examples for the local fit of each replacement.")
@click.option("--fit-epochs", default=20, show_default=True, type=int, help="Local fit epochs (0: skip).")
@click.option("--finetune-epochs", default=0, show_default=True, type=int, help="Final unfrozen fine-tune epochs.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--learning-rate", default=3e-3, show_default=True, type=float)
@click.option("--temperature", type=float, help="Distillation temperature [default: DistillConfig's].")
@click.option("--alpha", type=float, help="Weight of the hard-label loss [default: DistillConfig's].")
@click.option("--bench-runs", default=100, show_default=True, type=int,
              help="Timed .tflite calls per model for the latency totals (0: skip).")
@click.option("--plan", "plan_only", is_flag=True, help="Print the blocks and their replacements; train nothing.")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to save the swapped FILE.keras.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the accuracy/params plot (PNG).")
def swap(model_path, data_spec, val_fraction, image_size, color_mode, seed, tolerance, epochs_per_block, order,
         blocks_regex, candidates, fit_samples, fit_epochs, finetune_epochs, batch_size, learning_rate, temperature,
         alpha, bench_runs, plan_only, out, json_path, plot_path):
    """Swap a model's blocks for lighter ones, one at a time, keeping those that hold validation accuracy."""
    from kerascomp._io import write_json
    from kerascomp.compress import swap as block_swap
    from kerascomp.report import plot_swap, swap_table
    from kerascomp.saving import check_output_path, save_model

    if not plan_only and not out:
        raise click.UsageError("--out FILE.keras is required (or pass --plan)")
    for path, suffix in ((out, ".keras"), (json_path, ".json"), (plot_path, ".png")):
        if path and not plan_only:
            check_output_path(path, suffix)
    config = block_swap.SwapConfig(
        tolerance=tolerance, epochs_per_block=epochs_per_block, order=order, blocks=blocks_regex,
        candidates=tuple(c.strip() for c in candidates.split(",") if c.strip()) if candidates else None,
        fit_samples=fit_samples, fit_epochs=fit_epochs, finetune_epochs=finetune_epochs, batch_size=batch_size,
        learning_rate=learning_rate, temperature=temperature, alpha=alpha, bench_runs=bench_runs, seed=seed)
    model, meta, data = _model_and_data(model_path, None if plan_only else data_spec, val_fraction, image_size,
                                        color_mode, seed)
    click.echo(block_swap.format_plan(block_swap.plan(model, config)))
    if plan_only:
        return
    swapped, metrics = block_swap.apply(model, data, config)
    save_model(swapped, out, meta={**meta, "data": data.describe(), "swap": {
        "source": str(model_path), "replaced": metrics["replaced"], "params_before": metrics["params_before"],
        "params_after": metrics["params_after"]}})
    if json_path:
        write_json(json_path, metrics)
    if plot_path:
        plot_swap(metrics, plot_path)
    click.echo(swap_table(metrics))
    click.echo(f"replaced {len(metrics['replaced'])} of {len(metrics['blocks'])} blocks: {metrics['params_before']:,} -> "
               f"{metrics['params_after']:,} params, val accuracy {metrics['val_accuracy_before']:.4f} -> "
               f"{metrics['val_accuracy_after']:.4f}, test {metrics['test_accuracy_before']:.4f} -> "
               f"{metrics['test_accuracy_after']:.4f} -> {out}")


def _finetune_options(fn):
    """Options shared by prune, cluster and qat: fine-tuning, the original model as teacher, outputs."""
    for option in reversed([
        click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False)),
        _data_options,
        click.option("--epochs", type=int, help="Fine-tuning epochs [default: the technique's]."),
        click.option("--batch-size", default=64, show_default=True, type=int),
        click.option("--learning-rate", type=float, help="Peak fine-tuning learning rate [default: the technique's]."),
        click.option("--distill-from", type=click.Path(dir_okay=False), metavar="ORIGINAL.keras",
                     help="Fine-tune with this (uncompressed) model as teacher."),
        click.option("--temperature", type=float, help="Distillation temperature [default: FineTuneConfig's, 4]."),
        click.option("--alpha", type=float, help="Weight of the hard-label loss [default: FineTuneConfig's, 0.1]."),
        click.option("--out", type=click.Path(dir_okay=False), help="Output FILE.keras [default: MODEL_<stage>.keras]."),
        click.option("--save-format", default="keras", show_default=True, type=click.Choice(["keras", "keras3"]),
                     help="keras: tf_keras .keras (what every kerascomp command reads); keras3: a Keras 3 .keras "
                          "(pruned and clustered models; QAT models stay tf_keras)."),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics as JSON here."),
    ]):
        fn = option(fn)
    return fn


def _compress(stage, module, config_class, options, **settings):
    """Shared body of prune/cluster/qat: validate, print the pre-flight plan, fine-tune, save; returns the metrics."""
    from pathlib import Path

    from kerascomp._io import write_json
    from kerascomp.compress._tfmot import format_plan
    from kerascomp.saving import check_output_path, load, save_model, sidecar_path

    model_path = Path(options["model_path"])
    out = check_output_path(options["out"] or model_path.with_name(f"{model_path.stem}_{stage}.keras"), ".keras")
    if options["json_path"]:
        check_output_path(options["json_path"], ".json")
    if options["save_format"] == "keras3" and stage == "qat":
        raise click.UsageError("--save-format keras3: a QAT model stays tf_keras (its fake-quant layers are tfmot's); "
                               "its deployable form is the .tflite from `kerascomp convert --quantize int8`")
    tuning = {k: options[k] for k in ("epochs", "learning_rate", "temperature", "alpha") if options[k] is not None}
    config = config_class(**tuning, **settings, batch_size=options["batch_size"], seed=options["seed"],
                          distill_from=options["distill_from"])
    model, meta, data = _model_and_data(model_path, *(options[k] for k in ("data_spec", "val_fraction", "image_size",
                                                                            "color_mode", "seed")))
    teacher = load(config.distill_from, data)[0] if config.distill_from else None
    click.echo(format_plan(module.plan(model, config)))
    split = meta.get("data", {})
    if split.get("name") == data.name and split.get("seed", data.seed) != data.seed:
        click.echo(f"warning: --seed {data.seed} splits {data.name} unlike the model's training run (seed "
                   f"{split['seed']}): validation and test images may have been trained on", err=True)
    result, metrics = module.apply(model, data, config, teacher=teacher)
    metrics = {"source": str(model_path), "out": str(out), **metrics}
    summary = {k: v for k, v in metrics.items() if k not in ("fine_tune", "preflight", "sensitivity", "baseline")}
    side = {**meta, "data": data.describe(), "compression": [*meta.get("compression", []), {"stage": stage, **summary}]}
    if options["save_format"] == "keras3":
        from kerascomp.interop import save_keras3

        save_keras3(result, out, output_activation=meta.get("import", {}).get("output_activation", "logits"),
                    sample=data.x_val)
        write_json(sidecar_path(out), side)
    else:
        save_model(result, out, meta=side)
    if options["json_path"]:
        write_json(options["json_path"], metrics)
    base = metrics["baseline"]
    click.echo(f"val accuracy {base['val_accuracy']:.4f} -> {metrics['val_accuracy']:.4f}, "
               f"test {base['test_accuracy']:.4f} -> {metrics['test_accuracy']:.4f}"
               f"{' (distilled)' if teacher is not None else ''} -> {out}")
    return metrics


@cli.command()
@_finetune_options
@click.option("--sparsity", metavar="S|auto",
              help="Share of zeros in each pruned kernel, in [0, 1), or 'auto' (per layer, from a sensitivity scan); "
                   "required except with --structure 2:4 (fixed at 0.5).")
@click.option("--max-drop", default=1.0, show_default=True, type=float,
              help="With --sparsity auto: largest summed one-shot validation drop (percentage points).")
@click.option("--schedule", default="polynomial", show_default=True, type=click.Choice(["polynomial", "constant"]))
@click.option("--structure", default="unstructured", show_default=True, metavar="unstructured|2:4|block:RxC")
@click.option("--layers", metavar="REGEX", help="Prune only layers whose name matches.")
def prune(sparsity, max_drop, schedule, structure, layers, **options):
    """Magnitude-prune a .keras model (tfmot), fine-tune, and save the stripped sparse model."""
    from kerascomp.compress import prune as pruning

    try:
        value = sparsity if sparsity in (None, "auto") else float(sparsity)
    except ValueError:
        raise click.UsageError(f"--sparsity expects a number in [0, 1) or 'auto', got {sparsity!r}") from None
    metrics = _compress("pruned", pruning, pruning.PruneConfig, options, sparsity=value, max_drop=max_drop,
                        schedule=schedule, structure=structure, layers=layers)
    click.echo(f"sparsity {metrics['sparsity']:.4f} over {metrics['pruned_weights']:,} pruned weights; per layer: "
               + ", ".join(f"{name} {s:.3f}" for name, s in metrics["per_layer"].items()))


@cli.command()
@_finetune_options
@click.option("--clusters", default=16, show_default=True, type=int, help="Distinct values per clustered kernel (K).")
@click.option("--init", default="kmeans++", show_default=True, type=click.Choice(["kmeans++", "linear", "density"]),
              help="Centroid initialisation.")
@click.option("--preserve-sparsity", is_flag=True, help="Keep the zeros of a pruned model at zero.")
@click.option("--layers", metavar="REGEX", help="Cluster only layers whose name matches.")
def cluster(clusters, init, preserve_sparsity, layers, **options):
    """Cluster the weights of a .keras model (tfmot), fine-tune, and save the stripped model."""
    from kerascomp.compress import cluster as clustering

    metrics = _compress("clustered", clustering, clustering.ClusterConfig, options, clusters=clusters, init=init,
                        preserve_sparsity=preserve_sparsity, layers=layers)
    click.echo("distinct values per layer: " + ", ".join(f"{k} {v}" for k, v in metrics["unique_values"].items()))


@cli.command()
@_finetune_options
@click.option("--preserve", default="none", show_default=True, type=click.Choice(["none", "sparsity", "clusters"]),
              help="QAT scheme: plain, sparsity-preserving (PQAT) or cluster-preserving (CQAT).")
@click.option("--float-fallback", is_flag=True, help="Leave layers QAT cannot quantize in float instead of failing.")
def qat(preserve, float_fallback, **options):
    """Quantization-aware fine-tuning; the saved model converts with `convert --quantize int8`."""
    from kerascomp.compress import quantize

    metrics = _compress("qat", quantize, quantize.QATConfig, options, preserve=preserve, float_fallback=float_fallback)
    sparsity = metrics["kernel_sparsity"]
    click.echo(f"kernel sparsity {sparsity['before']:.4f} -> {sparsity['after']:.4f}"
               + (f"; left in float: {', '.join(metrics['float_layers'])}" if metrics["float_layers"] else ""))


@cli.command()
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@_data_options
@click.option("--sparsities", default="0.5,0.7,0.9", show_default=True, help="Sparsities to try, comma separated.")
@click.option("--layers", metavar="REGEX", help="Scan only layers whose name matches.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the scan as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the per-layer curves (PNG) here.")
def sensitivity(model_path, data_spec, val_fraction, image_size, color_mode, seed, sparsities, layers, json_path,
                plot_path):
    """One-shot per-layer pruning sensitivity: validation accuracy drop of each layer pruned alone."""
    from kerascomp._io import write_json
    from kerascomp.compress import sensitivity as scan
    from kerascomp.report import plot_sensitivity, sensitivity_table
    from kerascomp.saving import check_output_path

    for path, suffix in ((json_path, ".json"), (plot_path, ".png")):
        if path:
            check_output_path(path, suffix)
    values = _parse_value(sparsities)
    values = values if isinstance(values, tuple) else (values,)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise click.UsageError(f"--sparsities expects numbers like 0.5,0.7,0.9, got {sparsities!r}")
    config = scan.SensitivityConfig(sparsities=values, layers=layers)
    model, _, data = _model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed)
    _, result = scan.apply(model, data, config)
    click.echo(sensitivity_table(result))
    if json_path:
        write_json(json_path, {"source": str(model_path), **result})
    if plot_path:
        plot_sensitivity(result, plot_path)
    click.echo("most sensitive first: " + ", ".join(result["ranking"]))


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@_data_options(default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
def inspect_command(model_path, data_spec, val_fraction, image_size, color_mode, seed, json_path):
    """Pre-flight report of a model file (Keras 3, tf_keras or .h5): import check, per-layer support, TFLite ops."""
    from kerascomp._io import write_json
    from kerascomp.preflight import format_inspection, inspect_model
    from kerascomp.saving import check_output_path

    if json_path:
        check_output_path(json_path, ".json")
    report = inspect_model(model_path, _load_data(data_spec, val_fraction, image_size, color_mode, seed))
    click.echo(format_inspection(report))
    if json_path:
        write_json(json_path, report)


@cli.command("models")
def list_models():
    """List the zoo's models and their arguments."""
    from kerascomp import models

    for name, args in models.available().items():
        click.echo(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in args.items()))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: bad input gives one ``Error:`` line (exit 2 for usage, 1 for input), never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="kerascomp", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("Error: interrupted", err=True)
        return 130
    except KerascompError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except OSError as exc:  # a path the user gave cannot be read or written (e.g. a file where a folder must be)
        click.echo(f"Error: {exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else
                   f"Error: {first_line(exc)}", err=True)
        return 1
    except Exception as exc:
        if os.environ.get("KERASCOMP_DEBUG"):
            raise
        click.echo(f"Error: unexpected {type(exc).__name__}: {first_line(exc)} (set KERASCOMP_DEBUG=1 for the traceback)",
                   err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
