"""What every command shares: the data options, loading a model with its data, and option parsing."""

from __future__ import annotations

import click

from kerascomp.data import load_data as load
from kerascomp.options import key_value, parse_value
from kerascomp.saving import load_with_data
from kerascomp.tasks import TASKS

__all__ = ["data_options", "load_data", "model_and_data", "parse_key_values", "numbers", "json_option"]


def parse_key_values(pairs: tuple[str, ...], option: str) -> dict:
    """Repeated ``--option K=V`` values as a dict; a malformed pair is a usage error."""
    try:
        return dict(key_value(pair) for pair in pairs)
    except ValueError as exc:
        raise click.UsageError(f"{option} {exc}") from None


def numbers(text: str, option: str, kind: type | tuple[type, ...], example: str) -> tuple:
    """``1,2`` or ``0.5,0.7`` as a tuple of ``kind``; anything else is a usage error."""
    values = parse_value(text)
    values = values if isinstance(values, tuple) else (values,)
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise click.UsageError(f"{option} expects {'integers' if kind is int else 'numbers'} like {example}, "
                               f"got {text!r}")
    return values


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise click.UsageError(f"--image-size expects HxW or N, got {text!r}") from None
    return (size[0], size[0]) if len(size) == 1 else size


def data_options(fn=None, *, default: str | None = "digits"):
    """Options shared by every command that loads a dataset."""
    if fn is None:
        return lambda f: data_options(f, default=default)
    for option in reversed([
        click.option("--data", "data_spec", default=default, show_default=default is not None,
                     help="digits | FILE.npz | FOLDER/ | tfds:NAME"),
        click.option("--val-fraction", default=0.1, show_default=True, type=float,
                     help="Share of the training data held out for validation."),
        click.option("--image-size", default=None, help="Resize folder images to HxW (e.g. 32x32)."),
        click.option("--color-mode", default="rgb", show_default=True, type=click.Choice(["rgb", "grayscale"]),
                     help="Channels for folder images."),
        click.option("--seed", default=0, show_default=True, type=int, help="Seed for splits, initialisation and shuffling."),
        click.option("--task", type=click.Choice(list(TASKS)), expose_value=False, callback=_remember_task,
                     help="What the targets are; inferred when not given (an .npz of float targets: regression). "
                          "State regression for whole-number targets."),
    ]):
        fn = option(fn)
    return fn


def json_option(what: str = "the metrics"):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), help=f"Write {what} as JSON here.")


def _remember_task(ctx: click.Context, param, value):
    """``--task`` goes to :func:`load_data` through the context, so that no command's signature carries it."""
    ctx.meta["kerascomp.task"] = value
    return value


def load_data(data_spec, val_fraction, image_size, color_mode, seed):
    if data_spec is None:
        return None
    context = click.get_current_context(silent=True)
    task = context.meta.get("kerascomp.task") if context is not None else None
    return load(data_spec, val_fraction=val_fraction, seed=seed, image_size=_parse_size(image_size),
                color_mode=color_mode, task=task)


def model_and_data(model_path, data_spec, val_fraction, image_size, color_mode, seed):
    """A model file of any format, its metadata, and the data in the input scaling the model expects."""
    return load_with_data(model_path, load_data(data_spec, val_fraction, image_size, color_mode, seed))
