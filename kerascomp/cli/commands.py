"""The ``kerascomp`` command line: one thin command per stage over the library.

Commands parse options, call the library and print a summary; they hold no
logic of their own. TensorFlow is imported inside commands only, so
``kerascomp --help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from pathlib import Path

import click

from kerascomp import __version__, models, runtime, training
from kerascomp import bench as benchmark
from kerascomp.analysis.inspect import format_inspection, inspect_model
from kerascomp.bench.auto import convert_auto, table
from kerascomp.budget import OBJECTIVES, tie_words
from kerascomp.cli.common import data_options, json_option, load_data, model_and_data, numbers, parse_key_values
from kerascomp.cli.options import click_options
from kerascomp.cli.techniques import TechniqueCommands
from kerascomp.data.images import far_off, read_inputs
from kerascomp.errors import DataError, KerascompError, first_line
from kerascomp.export import default_output, export
from kerascomp.export.modes import BACKENDS, CALIBRATED_MODES, DEFAULT_BACKEND, KEEP_FLOAT_AUTO, QUANTIZE_MODES
from kerascomp.files import write_json
from kerascomp.interop import trusting_code
from kerascomp.pipeline import run_pipeline
from kerascomp.pipeline.config import load_config
from kerascomp.pipeline.report import render
from kerascomp.report import kernel_table, layer_error_table, plot_layer_errors, plot_tradeoff, results_table
from kerascomp.saving import check_output_path, save_model
from kerascomp.tasks import task_of_metric
from kerascomp.training import TrainConfig

__all__ = ["cli", "main", "train_command"]


@click.group(cls=TechniqueCommands, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={"train": "kerascomp.cli.commands:train_command", "sweep": "kerascomp.cli.analysis:sweep",
                   "sensitivity": "kerascomp.cli.analysis:sensitivity"})
@click.version_option(__version__, prog_name="kerascomp")
@click.option("--trust-code", is_flag=True, envvar="KERASCOMP_TRUST_CODE",
              help="Load models whose Lambda layers run Python code stored in the file (refused without this flag). "
                   "Only for files from a source you trust.")
@click.pass_context
def cli(ctx: click.Context, trust_code: bool) -> None:
    """Compress tf_keras models and measure the artifacts that ship.

    Train or bring a model, apply any of the techniques below, convert, bench, report;
    `kerascomp run CONFIG` chains them as a pipeline.
    """
    if trust_code:
        ctx.with_resource(trusting_code())


@cli.command()
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="FILE.tflite or FILE.onnx [default: <model>_<mode>.tflite beside the model].")
@click.option("--quantize", default="none", show_default=True,
              type=click.Choice([*QUANTIZE_MODES, "auto"]),
              help="auto: convert with every mode and backend, measure each here, keep the best within --max-drop. "
                   "dynamic-int4, int8-weights, int4-weights: LiteRT Quantizer only.")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND, show_default=True,
              help="Who quantizes: TFLiteConverter, or LiteRT Quantizer (op by op, with --keep-float).")
@click.option("--keep-float", "keep_float", multiple=True, metavar="OP|REGEX",
              help=f"LiteRT Quantizer: keep this TFLite op (SOFTMAX) or layers matching this regex in float; "
                   f"repeatable [default: {KEEP_FLOAT_AUTO}: the ops XNNPACK would not run in int8].")
@click.option("--layer-errors", type=click.IntRange(min=0), default=0,
              help="LiteRT Quantizer: compare every layer with the float file on this many validation examples; "
                   "prints the worst layers and writes <out>.layers.png.")
@data_options(default=None)
@click.option("--int8-io", is_flag=True, help="int8 input and output tensors (with --quantize int8).")
@click.option("--calibration-size", default=500, show_default=True, type=int,
              help="Training examples used to calibrate int8/int16x8.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset.")
@click.option("--batch-size", type=int,
              help="Fix the .tflite batch dimension (e.g. 1 on an edge device): run-time shape ops fold away and "
                   "XNNPACK takes larger partitions [default: dynamic].")
@click.option("--min-agreement", type=float, help="Lowest accepted top-1 agreement with the Keras model.")
@click.option("--objective", type=click.Choice(list(OBJECTIVES)),
              help="With --quantize auto: what the kept file minimises: latency (p50), size (gzip), bytes (the file "
                   "the device maps) or macs [default: latency].")
@click.option("--max-drop", type=float,
              help="With --quantize auto: validation accuracy (pp) the file may lose below the original [default: 1].")
@click.option("--threads", type=int, help="With --quantize auto: LiteRT threads to measure at [default: 1].")
@json_option("the conversion report (with auto: every candidate and the choice)")
def convert(model_path, out, quantize, backend, keep_float, layer_errors, data_spec, val_fraction, image_size,
            color_mode, seed, int8_io, calibration_size, opset, batch_size, min_agreement, objective, max_drop, threads,
            json_path):
    """Convert a .keras model to .tflite or .onnx and verify it against the model."""
    auto_options = {k: v for k, v in {"objective": objective, "max_drop": max_drop, "threads": threads}.items()
                    if v is not None}  # the rest keep convert_auto's defaults
    if quantize != "auto" and auto_options:
        raise click.UsageError("--objective, --max-drop and --threads apply to --quantize auto")
    if quantize == "auto" and backend != DEFAULT_BACKEND:
        raise click.UsageError("--quantize auto tries both backends: leave --backend out")
    if (keep_float or layer_errors) and backend != "litert-quantizer":
        raise click.UsageError("--keep-float and --layer-errors apply to --backend litert-quantizer")
    if data_spec is None and (quantize in CALIBRATED_MODES or quantize == "auto"):  # before TensorFlow loads
        raise click.UsageError(f"--quantize {quantize} needs --data: "
                               + ("it measures every candidate's accuracy" if quantize == "auto" else
                                  "the activation ranges are calibrated on training images"))
    model, meta, data = model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed)
    out = out or default_output(model_path, quantize)
    if quantize == "auto":
        report = _convert_auto(model, meta, data, model_path, out, calibration_size, batch_size, auto_options)
    else:
        report = export(model, out, quantize=quantize, data=data, meta=meta, int8_io=int8_io,
                        calibration_size=calibration_size, opset=opset, min_agreement=min_agreement,
                        source=model_path, batch_size=batch_size, backend=backend,
                        layer_errors=layer_errors, **({"keep_float": keep_float} if keep_float else {}))
        check = report["verification"]
        parts = check["outputs"] if isinstance(check.get("outputs"), dict) else {None: check}
        judged = "; ".join(("" if name is None else f"{name}: ") + _judged(part) for name, part in parts.items())
        samples = next(iter(parts.values()))["samples"]
        click.echo(f"verified on {samples} {'validation' if data else 'random'} inputs: {judged}")
        if report.get("keep_float"):
            click.echo(f"kept in float: {', '.join(report['keep_float'])}")
        if report.get("layer_errors"):
            _show_layer_errors(report["layer_errors"], out)
        by = f" ({report['backend']})" if report["backend"] not in (DEFAULT_BACKEND, "onnxruntime") else ""
        click.echo(f"{quantize}{by} -> {out} ({report['size_bytes'] / 1024:.1f} KB)")
    if json_path:
        write_json(json_path, report)


def _show_layer_errors(rows: list[dict], out) -> None:
    """The worst layers as a table, and every layer as a plot beside the file."""
    plot = f"{out}.layers.png"
    plot_layer_errors(rows, plot, title=f"{os.path.basename(out)}: error of each layer against the float file")
    click.echo(layer_error_table(rows, worst=10))
    click.echo(f"per-layer errors of {len(rows)} tensors -> {plot}")


def _shown(output, task: str, class_names) -> str:
    """One example's output as a person reads it: a regressor's values, the share of the image each class covers
    in a mask, a classifier's most likely class."""
    import numpy as np  # as predict: the CLI imports numpy where a command needs it

    if task == "regression":
        return ", ".join(f"{v:.4g}" for v in np.ravel(output))
    if task == "segmentation":
        shares = np.bincount(output.argmax(-1).ravel(), minlength=len(class_names)) / output[..., 0].size
        return ", ".join(f"{label} {share:.1%}" for label, share in zip(class_names, shares) if share)
    probabilities = runtime.softmax(output)
    return f"{int(probabilities.argmax())} {probabilities.max():.3f}"


def _judged(check: dict) -> str:
    """How a converted file's outputs compare with the Keras model's, as its check judged them."""
    if check.get("judged_by") == "spread":
        return (f"mean |d| {check['mean_abs_diff']:.2g} ({check['mean_abs_diff'] / max(check['reference_std'], 1e-12):.1%}"
                f" of the outputs' spread), max {check['max_abs_diff']:.2g}")
    return (f"top-1 agreement {check['top1_agreement']:.1%}, max |dlogit| {check['max_abs_diff']:.2g}, "
            f"mean {check['mean_abs_diff']:.2g}")


def _convert_auto(model, meta, data, model_path, out, calibration_size, batch_size, options: dict) -> dict:
    """``convert --quantize auto``: every mode measured here, the best within the budget kept."""
    result = convert_auto(model, out, data=data, meta=meta, source=model_path, calibration_size=calibration_size,
                          batch_size=batch_size, echo=click.echo, **options)
    click.echo(table(result))
    click.echo(f"auto: {result['chosen']} is the {OBJECTIVES[result['objective']].words} "
               f"within {data.task.budget(result['max_drop'])} of validation {result['metric']}{tie_words(result)} "
               f"-> {out}")
    return result


@cli.command()
@click.argument("artifact", metavar="FILE.tflite", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_FOLDER_OR_NPZ...")
@click.option("--top-k", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=1, show_default=True, type=int)
def predict(artifact, inputs, top_k, threads):
    """Classify image files (PNG/JPG), folders of them, or the x_test/x array of an .npz with the edge runtime
    (a regressor's files print their output values, a segmenter's the share of the image each class covers)."""
    import numpy as np

    if Path(artifact).suffix != ".tflite":
        raise click.UsageError(f"predict runs a .tflite file on the edge runtime; convert {artifact} first: "
                               f"kerascomp convert {artifact} --out {Path(artifact).stem}.tflite")
    runtime.trial_run(artifact)  # a damaged file crashes a child, not this process
    model = runtime.load(artifact, threads=threads)
    trained = (model.meta or {}).get("input_range")
    warned = False
    for name, raw in read_inputs(inputs, model.input_shape, warn=lambda m: click.echo(f"warning: {m}", err=True)):
        if not np.isfinite(raw).all():
            raise DataError(f"{name} holds NaN or Inf values")
        if trained and not warned and far_off(float(raw.max()), trained[1]):
            warned = True
            click.echo(f"warning: {name} holds values up to {raw.max():g}; the model trained on {trained[0]:g}.."
                       f"{trained[1]:g} (check the pixel range: 0..255 images for a 0..16 model?)", err=True)
        outputs = model.predict(model.preprocess(raw[None]))
        meta = model.meta or {}
        if model.output_names:  # several outputs: each as its own task shows it
            click.echo(f"{name}: " + "; ".join(f"{output} {_shown(outputs[output][0], task, model.class_names)}"
                                               for output, task in meta.get("heads", {}).items()))
            continue
        task = meta.get("task", "classification")
        if task != "classification":
            click.echo(f"{name}: {_shown(outputs[0], task, model.class_names)}")
            continue
        labels = model.classify(raw[None], top_k=top_k)[0]
        click.echo(f"{name}: " + ", ".join(f"{label} {p:.3f}" for label, p in labels))


@cli.command()
@click.argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT...")
@data_options
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
    thread_counts = numbers(threads, "--threads", int, "1,2")
    data = load_data(data_spec, val_fraction, image_size, color_mode, seed)
    for artifact in artifacts:
        if Path(artifact).suffix == ".tflite" and Path(artifact).is_file():
            runtime.trial_run(artifact)  # a damaged file crashes a child, not this process
    document = benchmark.bench(artifacts, data, threads=thread_counts, runs=runs, warmup=warmup, op_resolver=op_resolver)
    click.echo(results_table(document["results"]))
    kernels = kernel_table(document["results"])
    if kernels:
        click.echo("\nWhere the nodes run:\n" + kernels)
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
@click.option("--strict", is_flag=True, help="Exit non-zero when no artifact meets the config's budget.")
def run(config_path, out, resume, overrides, strict):
    """Run a compression pipeline from a YAML config and write its report."""
    document = run_pipeline(load_config(config_path, overrides), out, resume=resume)
    summary = document["summary"]
    if "gzip_ratio" in summary:
        ratio = summary["latency_ratio"]
        speed = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
        click.echo(f"{summary['final']} vs {summary['baseline']}: {summary['gzip_ratio']:.1f}x smaller (gzip), "
                   f"{speed} (p50), {task_of_metric(summary['metric']).amount(summary['metric_drop'], signed=True)} "
                   f"test {summary['metric']} drop")
        click.echo(f"ship: {Path(out) / summary['path']}")  # report paths are the run folder's
    click.echo(f"report -> {out}/report.md")
    if strict and document.get("choice") and document["choice"]["chosen"] is None:
        raise click.ClickException(document["choice"]["message"])


@cli.command()
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False))
def report(run_dir):
    """Re-render DIR/report.md and its plots from DIR/report.json."""
    click.echo(f"report -> {render(run_dir)}")


@cli.command("inspect")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@data_options(default=None)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report as JSON here.")
def inspect_command(model_path, data_spec, val_fraction, image_size, color_mode, seed, json_path):
    """Pre-flight report of a model file (Keras 3, tf_keras or .h5): import check, per-layer support, TFLite ops."""
    if json_path:
        check_output_path(json_path, ".json")
    report = inspect_model(model_path, load_data(data_spec, val_fraction, image_size, color_mode, seed))
    click.echo(format_inspection(report))
    if json_path:
        write_json(json_path, report)


@cli.command("models")
def list_models():
    """List the zoo's models and their arguments."""
    for name, args in models.available().items():
        click.echo(f"{name}: " + ", ".join(f"{k}={v!r}" for k, v in args.items()))


def train_command() -> click.Command:
    """``kerascomp train``, built when asked for: its options are TrainConfig's, which imports TensorFlow."""
    @click.command("train")
    @click.option("--model", "model_name", required=True, help="Zoo model name (see `kerascomp models`).")
    @click.option("--model-arg", multiple=True, metavar="K=V",
                  help="Model argument, repeatable (e.g. width=16, hidden=600,600).")
    @data_options
    @click_options(TrainConfig)
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to save the trained FILE.keras.")
    @json_option()
    def train(model_name, model_arg, data_spec, val_fraction, image_size, color_mode, seed, out, json_path, **fields):
        """Train a zoo model (teacher or baseline) on a dataset."""
        check_output_path(out, ".keras")
        model_args = parse_key_values(model_arg, "--model-arg")
        models.check_args(model_name, model_args)
        config = TrainConfig(**fields, seed=seed)
        data = load_data(data_spec, val_fraction, image_size, color_mode, seed)
        click.echo(f"data {data.name}: {len(data.x_train)} train / {len(data.x_val)} val / {len(data.x_test)} test, "
                   f"input {data.input_shape}, {data.num_outputs} {data.task.outputs}")
        model, metrics = training.train(model_name, data, config, model_args=model_args)
        metrics = {"model": {"name": model_name, "args": model_args}, **metrics, "data": data.describe()}
        save_model(model, out, meta={"model": metrics["model"], "data": data.describe()})
        if json_path:
            write_json(json_path, metrics)
        val, test = data.task.keys
        click.echo(f"test {data.task.metric} {metrics[test]:.4f} (val {metrics[val]:.4f}), "
                   f"{metrics['params']:,} params, {metrics['seconds_per_epoch']:.2f} s/epoch over "
                   f"{metrics['epochs']} epochs -> {out}")

    return train


def main(argv: list[str] | None = None) -> int:
    """Run the CLI: bad input gives one ``Error:`` line (exit 2 for usage, 1 for input), never a traceback."""
    stopped_by = []
    try:
        with _terminate_as_interrupt(stopped_by):
            code = cli.main(args=argv, prog_name="kerascomp", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:
        said = str(exc.__cause__ or "") if isinstance(exc, click.Abort) else str(exc)  # click wraps Ctrl-C in Abort
        signum = stopped_by[-1] if stopped_by else signal.SIGINT
        click.echo(f"Error: stopped by {signal.Signals(signum).name}" + (f": {said}" if said else ""), err=True)
        return 128 + signum
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


@contextlib.contextmanager
def _terminate_as_interrupt(stopped_by: list):
    """SIGTERM (a scheduler, ``kill``, a container stopping) unwinds like Ctrl-C: atomic writes roll back, the
    folder's lock is let go and the message says how to resume, where the default would end the process at once."""
    def interrupt(signum, frame):
        stopped_by.append(signum)
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (a host that runs the CLI in a thread): leave signals to it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
