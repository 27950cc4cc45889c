"""Commands that measure rather than compress: ``sweep`` (distillation settings and student sizes) and
``sensitivity`` (per-layer pruning). The CLI imports this module only when one of them is asked for,
because building ``sweep``'s options from :class:`StudentConfig` imports TensorFlow."""

from __future__ import annotations

from pathlib import Path

import click

from kerascomp.analysis import sweep as sweeping
from kerascomp.analysis.sweep import BACKENDS as SWEEP_BACKENDS
from kerascomp.analysis.sweep import SCHEDULERS, TRIAL_RETRIES
from kerascomp.cli.common import data_options, json_option, model_and_data, numbers, parse_key_values
from kerascomp.cli.options import click_options
from kerascomp.compress import sensitivity as scan
from kerascomp.compress.distill import StudentConfig
from kerascomp.files import write_bytes, write_json
from kerascomp.report import plot_sensitivity, plot_sweep, sensitivity_table
from kerascomp.saving import check_output_path

__all__ = ["sweep", "sensitivity"]


@click.command()
@click.option("--teacher", "teacher_path", required=True, type=click.Path(dir_okay=False), help="Trained teacher .keras.")
@data_options
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2",
              help="Values to sweep, repeatable: temperature, alpha, augment, hint_weight, seed or student.<arg>.")
@click_options(StudentConfig, skip=("compare_scratch",))
@click.option("--no-scratch", is_flag=True, help="Skip the from-scratch runs.")
@click.option("--out", "out_dir", default="sweep", show_default=True, type=click.Path(file_okay=False),
              help="Folder for sweep.json (the resumable state), sweep.md and sweep.png.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="State/results JSON [default: OUT/sweep.json].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Plot PNG [default: OUT/sweep.png].")
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True,
              help="Repeat every grid point with seeds SEED, SEED+1, ... (instead of a seed grid key).")
@click.option("--backend", type=click.Choice(SWEEP_BACKENDS), default="local", show_default=True,
              help="local: one run after another here; ray: Ray Tune trials (needs kerascomp[ray]).")
@click.option("--address", help="With --backend ray: the cluster to join (auto, or HOST:PORT) [default: start Ray here].")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="none", show_default=True,
              help="With --backend ray: asha stops trials whose validation accuracy trails, epoch by epoch.")
@click.option("--cpus-per-trial", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="With --backend ray: CPUs Ray reserves for each trial.")
@click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --backend ray: GPUs Ray reserves for each trial.")
@click.option("--trial-retries", type=click.IntRange(min=0), default=TRIAL_RETRIES, show_default=True,
              help="With --backend ray: times a trial whose process died (a killed worker, a lost node) starts over.")
def sweep(teacher_path, data_spec, val_fraction, image_size, color_mode, seed, grid, no_scratch, out_dir, json_path,
          plot_path, num_samples, backend, address, scheduler, cpus_per_trial, gpus_per_trial, trial_retries, **fields):
    """Sweep distillation settings and student sizes (resumable): how much smaller can the student be?"""
    ray_options = {"address": address, "scheduler": scheduler, "cpus_per_trial": cpus_per_trial,
                   "gpus_per_trial": gpus_per_trial, "retries": trial_retries}
    if backend == "local" and (address or scheduler != "none"):
        raise click.UsageError("--address and --scheduler apply to --backend ray")
    grid_values = sweeping.with_samples(sweeping.parse_grid(parse_key_values(grid, "--grid")), num_samples, seed)
    student = fields.pop("student") or "cnn"
    config = StudentConfig(**{k: v for k, v in fields.items() if v is not None}, seed=seed, student=student)
    teacher, _, data = model_and_data(teacher_path, data_spec, val_fraction, image_size, color_mode, seed)
    out = Path(out_dir)
    json_path, plot_path = Path(json_path or out / "sweep.json"), Path(plot_path or out / "sweep.png")
    state = sweeping.sweep(teacher, data, grid_values, json_path, student=config.student,
                           student_args=config.student_args, train_config=config.budget(), distill=config.settings(),
                           compare_scratch=not no_scratch, progress=click.echo, backend=backend,
                           ray=ray_options if backend == "ray" else None)
    table = sweeping.sweep_table(state)
    write_bytes(out / "sweep.md", table + "\n")
    plot_sweep(state["points"], plot_path, teacher_accuracy=state["teacher_accuracy"])
    click.echo(table)
    click.echo(f"-> {json_path}, {out / 'sweep.md'}, {plot_path}")


@click.command()
@click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
@data_options
@click.option("--sparsities", default="0.5,0.7,0.9", show_default=True, help="Sparsities to try, comma separated.")
@click.option("--layers", metavar="REGEX", help="Scan only layers whose name matches.")
@json_option("the scan")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the per-layer curves (PNG) here.")
def sensitivity(model_path, data_spec, val_fraction, image_size, color_mode, seed, sparsities, layers, json_path,
                plot_path):
    """One-shot per-layer pruning sensitivity: validation accuracy drop of each layer pruned alone."""
    for path, suffix in ((json_path, ".json"), (plot_path, ".png")):
        if path:
            check_output_path(path, suffix)
    config = scan.SensitivityConfig(sparsities=numbers(sparsities, "--sparsities", (int, float), "0.5,0.7,0.9"),
                                    layers=layers)
    model, _, data = model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed)
    _, result = scan.apply(model, data, config)
    click.echo(sensitivity_table(result))
    if json_path:
        write_json(json_path, {"source": str(model_path), **result})
    if plot_path:
        plot_sensitivity(result, plot_path)
    click.echo("most sensitive first: " + ", ".join(result["ranking"]))
