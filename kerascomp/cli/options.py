"""click options generated from a config dataclass's option fields (see :mod:`kerascomp.options`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Sequence

import click

from kerascomp.options import flag_name, option_fields

__all__ = ["click_options"]


def click_options(config_class: type, skip: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per option field of ``config_class`` (except those in ``skip``)."""
    hints = typing.get_type_hints(config_class)

    def decorate(fn: Callable) -> Callable:
        for field in reversed([f for f in option_fields(config_class) if f.name not in skip]):
            fn = _click_option(field, hints[field.name])(fn)
        return fn

    return decorate


def _click_option(field: dataclasses.Field, hint: Any) -> Callable:
    meta = field.metadata
    flag = flag_name(field)
    if meta["multiple"]:
        return click.option(flag, field.name, multiple=True, type=meta["type"], metavar=meta["metavar"],
                            help=meta["help"])
    kwargs = {"help": meta["help"], "metavar": meta["metavar"], "default": field.default,
              "show_default": field.default is not None and field.default is not False}
    base = _base_type(hint)
    if base is bool:
        if field.default is False:
            return click.option(flag, field.name, is_flag=True, help=meta["help"], default=False)
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, **kwargs)  # on by default, or None: decided later
    if meta["choices"]:
        kwargs["type"] = click.Choice(list(meta["choices"]))
    elif meta["type"] is not None:
        kwargs["type"] = meta["type"]
    elif base in (int, float, str):
        kwargs["type"] = base
    return click.option(flag, field.name, **kwargs)


def _base_type(hint: Any) -> Any:
    """``int`` of ``int | None``; the hint itself otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint
