"""Options declared once, on the config dataclass field: default, help, choices and metavar have one home.

A config field declared with :func:`option` carries its help text, choices
and metavar. The CLI turns every such field into a ``--name`` option
(:mod:`kerascomp.cli.options`), the pipeline's YAML keys are the same field
names, and nothing here knows a command-line framework. Fields declared
without :func:`option` (``seed``, ``verbose``) are not options: the caller
supplies them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import yaml

from kerascomp.errors import ConfigError

__all__ = ["option", "option_fields", "cli_args", "parse_value", "key_value", "flag_name", "at_least"]


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


def at_least(config: object, minimum: int, *names: str) -> None:
    """A ConfigError naming the first of ``config``'s fields ``names`` below ``minimum`` (0: non-negative)."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            bound = "non-negative" if minimum == 0 else f"at least {minimum}"
            raise ConfigError(f"{name} must be {bound}, got {value}")


def flag_name(field: dataclasses.Field) -> str:
    """The field's command-line spelling: its ``flag``, else ``--field-name``."""
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")


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
        flag = flag_name(field)
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
