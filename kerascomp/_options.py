"""Command-line options generated from a config dataclass, so every default, choice and help has one home.

A config field declared with :func:`option` carries its help text, choices
and metavar; :func:`click_options` turns every such field into a ``--name``
option with the dataclass default (``bool`` fields become flags), and the
pipeline's YAML keys are the same field names. Fields declared without
:func:`option` (``seed``, ``verbose``) are not options: the command supplies them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Sequence

import click
import yaml

__all__ = ["option", "click_options", "option_fields", "cli_args", "parse_value", "key_value"]


def option(default: Any = None, help: str = "", *, choices: Sequence[str] | None = None, metavar: str | None = None,
           type: Callable | None = None, flag: str | None = None, multiple: bool = False) -> Any:
    """A dataclass field that is also a command-line option.

    ``type`` converts one value and raises ValueError on a bad one; ``flag``
    overrides the ``--field-name`` spelling; ``multiple`` makes the option
    repeatable (the field receives a tuple of converted values).
    """
    metadata = {"help": help, "choices": choices, "metavar": metavar, "type": type, "flag": flag,
                "multiple": multiple, "option": True}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: default.copy(), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of ``config_class`` that are options, in declaration order (base class fields first)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("option")]


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
    flag = meta["flag"] or "--" + field.name.replace("_", "-")
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


def parse_value(text: str) -> object:
    """YAML scalars (``3``, ``0.5``, ``true``, ``imagenet``); a comma makes a tuple (``hidden=600,600``)."""
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def key_value(text: str) -> tuple[str, object]:
    """One ``K=V`` option value as ``(key, parsed value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expects key=value, got {text!r}")
    return key.strip(), parse_value(value.strip())


def cli_args(config: object) -> list[str]:
    """The command-line options that rebuild ``config``: one per option field that differs from its default."""
    args = []
    for field in option_fields(type(config)):
        value, default = getattr(config, field.name), _default(field)
        if value == default:
            continue
        flag = field.metadata["flag"] or "--" + field.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, dict):
            args += [x for key, item in value.items() for x in (flag, f"{key}={_text(item)}")]
        elif field.metadata["multiple"]:
            args += [x for item in value for x in (flag, _text(item, ":"))]
        else:
            args += [flag, _text(value)]
    return args


def _default(field: dataclasses.Field) -> object:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _text(value: object, joiner: str = ",") -> str:
    return joiner.join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
