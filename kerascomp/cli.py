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
from kerascomp.errors import KerascompError

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
    from kerascomp.saving import load_meta, load_model

    model = load_model(model_path)
    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
    out = out or default_output(model_path, quantize)
    report = export(model, out, quantize=quantize, data=data, meta=load_meta(model_path), int8_io=int8_io,
                    calibration_size=calibration_size, opset=opset, min_agreement=min_agreement, source=model_path)
    check = report["verification"]
    diffs = f", max |dlogit| {check['max_abs_diff']:.2g}, mean {check['mean_abs_diff']:.2g}"
    click.echo(f"verified on {check['samples']} {'validation' if data else 'random'} inputs: top-1 agreement "
               f"{check['top1_agreement']:.1%}{diffs}")
    click.echo(f"{quantize} -> {out} ({report['size_bytes'] / 1024:.1f} KB)")


@cli.command()
@click.argument("artifact", metavar="FILE.tflite", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_NPZ...")
@click.option("--top-k", default=3, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=int)
def predict(artifact, inputs, top_k, threads):
    """Classify image files (PNG/JPG) or the x_test/x array of an .npz with the edge runtime."""
    from kerascomp import runtime
    from kerascomp._images import read_inputs

    model = runtime.load(artifact, threads=threads)
    for name, raw in read_inputs(inputs, model.input_shape):
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
        click.option("--epochs", default=60, show_default=True, type=int),
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
        click.option("--temperature", type=float, help="Softmax temperature T > 0 [default: DistillConfig's]."),
        click.option("--alpha", type=float, help="Weight of the hard-label loss, in [0, 1] [default: DistillConfig's]."),
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
    from kerascomp.saving import check_output_path, load_model, save_model

    check_output_path(out, ".keras")
    config = _distill_config(temperature, alpha, augment, teacher_cache, hints, hint_weight)
    train_config = _train_config(epochs, batch_size, learning_rate, patience, seed, strategy, mixed_precision)
    student_args = _parse_key_values(student_arg, "--student-arg")
    models.check_args(student_name, student_args)
    teacher = load_model(teacher_path)
    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
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
    from kerascomp.saving import load_model

    grid_values = sweeping.parse_grid(_parse_key_values(grid, "--grid"))
    config = _distill_config(temperature, alpha, augment, teacher_cache, hints, hint_weight)
    train_config = _train_config(epochs, batch_size, learning_rate, patience, seed, strategy, mixed_precision)
    teacher = load_model(teacher_path)
    data = _load_data(data_spec, val_fraction, image_size, color_mode, seed)
    out = Path(out_dir)
    json_path, plot_path = Path(json_path or out / "sweep.json"), Path(plot_path or out / "sweep.png")
    state = sweeping.sweep(teacher, data, grid_values, json_path, student=student_name,
                           student_args=_parse_key_values(student_arg, "--student-arg"), train_config=train_config,
                           distill=config, compare_scratch=not no_scratch, progress=click.echo)
    table = sweeping.sweep_table(state)
    with atomic_path(out / "sweep.md") as tmp:
        tmp.write_text(table + "\n")
    plot_sweep(state["points"], plot_path)
    click.echo(table)
    click.echo(f"-> {json_path}, {out / 'sweep.md'}, {plot_path}")


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
    except Exception as exc:
        if os.environ.get("KERASCOMP_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        click.echo(f"Error: unexpected {type(exc).__name__}: {message} (set KERASCOMP_DEBUG=1 for the traceback)", err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
