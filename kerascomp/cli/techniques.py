"""One ``kerascomp NAME`` command per registered technique, generated from its registration.

The options are the technique config's fields (see :mod:`kerascomp.options`);
what is added here is only what is truly command-line: the input model, the
data, ``--out``, ``--save-format``, ``--json``, ``--plots`` and ``--plan``.
The command calls :func:`kerascomp.pipeline.runner.compress_file`, as the
pipeline's stage does.
"""

from __future__ import annotations

import click

from kerascomp.cli.common import data_options, json_option, load_data
from kerascomp.cli.options import click_options
from kerascomp.compress import registry
from kerascomp.files import write_json
from kerascomp.pipeline.runner import SAVE_FORMATS, compress_file, config_from, default_out, measurement, planned_config
from kerascomp.saving import check_output_path, load

__all__ = ["TechniqueCommands", "technique_command"]


class TechniqueCommands(click.Group):
    """The group's own commands, ``lazy`` ones (``name: "module:attribute"``, a command or a function that
    builds one, imported when asked for) and one per registered technique, read from the registry."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy, *registry.techniques()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in self.lazy:
            import importlib

            module, attribute = self.lazy[name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            command = command if isinstance(command, click.Command) else command()
        elif command is None:
            technique = registry.techniques().get(name)
            command = technique_command(technique) if technique else None
        return command


def technique_command(technique) -> click.Command:
    """``kerascomp NAME MODEL.keras [options]`` (or ``--teacher FILE`` where the input is a teacher)."""
    if technique.input_key == "input":
        model_input = click.argument("model_path", metavar="MODEL.keras", type=click.Path(dir_okay=False))
    else:
        model_input = click.option(f"--{technique.input_key}", "model_path", required=True, metavar="FILE.keras",
                                   type=click.Path(dir_okay=False), help=f"The trained {technique.input_key} model.")
    extras = [click.option("--out", type=click.Path(dir_okay=False),
                           help=f"Output FILE.keras [default: MODEL_{technique.suffix or technique.name}.keras]."),
              click.option("--save-format", default="auto", show_default=True, type=click.Choice(SAVE_FORMATS),
                           help="auto: the input's format (a Keras 3 file in, a Keras 3 file out, where Keras 3 can "
                                "hold the result); keras: a tf_keras .keras; keras3: a Keras 3 .keras."),
              json_option(),
              click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
                           help="Write training-curve, epoch-time and confusion-matrix PNGs (and the technique's "
                                "own figure) to this folder.")]
    if technique.plan is not None:
        extras.append(click.option("--plan", "plan_only", is_flag=True,
                                   help="Print the pre-flight plan and stop; nothing is trained."))

    def command(model_path, data_spec, val_fraction, image_size, color_mode, seed, out, save_format, json_path,
                plots_dir, plan_only=False, **fields):
        _run(technique, model_path, load_data(data_spec, val_fraction, image_size, color_mode, seed), seed, out,
             save_format, json_path, plots_dir, plan_only, fields)

    for decorator in reversed([model_input, data_options, click_options(technique.config), *extras]):
        command = decorator(command)
    return click.command(technique.name, help=technique.help)(command)


def _run(technique, model_path, data, seed, out, save_format, json_path, plots_dir, plan_only, fields) -> None:
    config = config_from(technique.name, {**fields, "seed": seed})
    if plan_only:
        click.echo(technique.plan(load(model_path, data)[0], planned_config(technique, config),
                                  **measurement(technique)))
        return
    if save_format == "keras3" and technique.keeps_wrappers:
        raise click.UsageError(f"--save-format keras3: a {technique.name} model stays tf_keras (its wrappers are "
                               "tfmot's); its deployable form is the .tflite from `kerascomp convert`")
    out = check_output_path(out or default_out(technique.name, model_path), ".keras")
    if json_path:
        check_output_path(json_path, ".json")
    metrics = compress_file(technique.name, model_path, data, config, out, save_format=save_format,
                            echo=click.echo, plots_dir=plots_dir)
    if json_path:
        write_json(json_path, metrics)
    base, (val, test) = metrics["baseline"], data.task.keys
    click.echo(f"val {data.task.metric} {base[val]:.4f} -> {metrics[val]:.4f}, "
               f"test {base[test]:.4f} -> {metrics[test]:.4f}"
               f"{' (distilled)' if (metrics.get('fine_tune') or {}).get('distill') else ''} -> {out}")
    click.echo(metrics["summary"])
