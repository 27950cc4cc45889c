"""The technique registry: a compression technique is registered once and is then everywhere.

A :class:`Technique` records what the rest of kerascomp needs to know about
one technique: its name (the CLI command and the pipeline stage kind), its
config dataclass, ``apply``, the optional ``plan``, ``strip`` and
``load_scope`` hooks, its *strength* knob and ``summary``. The CLI, the
pipeline, the public exports and the load and export paths all read this
registry, so no other list of technique names exists.

The registry itself knows no technique: the built-in ones register
themselves when their module in :mod:`kerascomp.compress` is imported, which
:func:`techniques` does on first use (a user's technique registers the same
way from any module). ``saving`` and ``export`` never import a technique: this
module installs into :mod:`kerascomp.saving`, once, the techniques' load scopes
and wrapper stripping (the lower layer calls what the upper one installs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import pkgutil
from typing import Callable, ContextManager, Iterator

import kerascomp.compress as package
from kerascomp import saving
from kerascomp.errors import ConfigError
from kerascomp.options import option

__all__ = ["Technique", "Strength", "Budgeted", "register", "unregister", "get", "techniques", "load_scope", "strip",
           "FIXED_KINDS", "RESERVED"]

FIXED_KINDS = ("train", "convert", "bench")  # the pipeline's own stage kinds; every other kind is a technique
RESERVED = ("load", *FIXED_KINDS)  # names no technique may take ("load": the stage that reads a teacher file)


@dataclasses.dataclass(frozen=True)
class Strength:
    """The one field an automatic search may turn to trade accuracy for size.

    ``steps`` run from the weakest setting to the strongest (e.g. sparsity
    0.5 -> 0.9375, clusters 32 -> 4); their order gives the direction
    (:attr:`stronger`) and their ends the range. ``field`` may name a key
    inside a dict field (``student_args.width``). ``warm_start``: a stronger
    try may start from the last passing result instead of the input.
    """

    field: str
    steps: tuple
    warm_start: bool = False

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        rising = all(a < b for a, b in zip(steps, steps[1:]))
        falling = all(a > b for a, b in zip(steps, steps[1:]))
        if len(steps) < 2 or not (rising or falling):
            raise ConfigError(f"strength {self.field!r}: steps must be at least two strictly monotone values")
        object.__setattr__(self, "steps", steps)

    @property
    def stronger(self) -> str:
        """``"up"`` when a larger value compresses more (sparsity), ``"down"`` when a smaller one does (clusters)."""
        return "up" if self.steps[1] > self.steps[0] else "down"

    @property
    def low(self) -> float:
        return min(self.steps)

    @property
    def high(self) -> float:
        return max(self.steps)

    def get(self, config: object):
        """The field's value in ``config`` (None: not set, so a search may choose it)."""
        name, _, key = self.field.partition(".")
        value = getattr(config, name)
        return value.get(key) if key else value

    def set(self, config: object, value) -> object:
        """A copy of ``config`` with the field set to ``value``."""
        name, _, key = self.field.partition(".")
        return dataclasses.replace(config, **{name: {**getattr(config, name), key: value} if key else value})

    def between(self, passed, failed):
        """The midpoint of two steps for one bisection try, or None when none lies strictly between."""
        if isinstance(passed, int) and isinstance(failed, int):
            middle = (passed + failed) // 2
        else:
            middle = round((passed + failed) / 2, 6)
        return middle if min(passed, failed) < middle < max(passed, failed) else None


@dataclasses.dataclass(kw_only=True)
class Budgeted:
    """The accuracy budget every technique config takes (``--max-drop``, ``max_drop:`` in a stage).

    With the strength field left unset the technique searches for the
    strongest setting within the budget; with it set, the result is checked.
    """

    max_drop: float | None = option(None, "Accuracy budget: most percentage points of validation accuracy below the "
                                          "original model; unset strength is searched.", metavar="PP")

    def __post_init__(self) -> None:
        if self.max_drop is not None and not self.max_drop >= 0:
            raise ConfigError(f"max_drop must be non-negative, got {self.max_drop}")


@dataclasses.dataclass(frozen=True)
class Technique:
    """One compression technique, as the CLI, the pipeline and the report see it.

    Attributes:
        name: the command and stage kind (``kerascomp NAME``, ``- NAME: {...}``).
        config: the options dataclass; its fields are the command's options and
            the stage's keys (see :mod:`kerascomp.options`).
        apply: ``apply(model, data, config, *, teacher=None) -> (model, metrics)``;
            must leave ``model`` untouched.
        help: one paragraph for ``kerascomp NAME --help``.
        summary: ``summary(metrics) -> str``, the headline the CLI prints.
        plan: ``plan(model, config) -> str`` (with ``measure=`` where the
            technique ``measures``), the pre-flight table printed before any
            work, or None.
        layers: ``layers(model) -> {layer name: "yes" or "no: why"}`` at default
            settings, for ``kerascomp inspect``; or None.
        strip: removes training-only wrappers before export, or None.
        load_scope: a context manager factory with the custom objects its saved
            models need, or None.
        strength: the knob an accuracy-budget search turns, or None.
        suffix: appended to the input's file stem when no output is named.
        input_key: the stage key naming the input model (``distill``: ``teacher``).
        teacher: whether it can fine-tune with a teacher (``--distill-from``).
        keeps_wrappers: its result keeps tf_keras-only wrappers (QAT), so it
            cannot be saved as a Keras 3 file.
        measures: what ``apply`` (and ``plan``) is given as ``measure`` by the
            caller, since compress imports no export or bench: ``"deployed"``,
            ``measure(original, compressed, data, runs)`` reporting the deployed
            files before and after; ``"latency"``, ``measure(model) -> p50 ms``
            of its float32 LiteRT file here. None: nothing.
        runs: the training runs its metrics hold, as ``(label, metrics key)``
            pairs; the report draws their curves and epoch times.
    """

    name: str
    config: type
    apply: Callable
    help: str
    summary: Callable[[dict], str]
    plan: Callable | None = None
    layers: Callable | None = None
    strip: Callable | None = None
    load_scope: Callable[[], ContextManager] | None = None
    strength: Strength | None = None
    suffix: str = ""
    input_key: str = "input"
    teacher: bool = True
    keeps_wrappers: bool = False
    measures: str | None = None
    runs: tuple[tuple[str, str], ...] = (("fine-tuned", "fine_tune"),)

    @property
    def module(self) -> str:
        return self.apply.__module__


_TECHNIQUES: dict[str, Technique] = {}


def register(technique: Technique) -> Technique:
    """Add ``technique``; a name already taken by another module (or a reserved stage kind) is an error."""
    if technique.name in RESERVED or not technique.name.isidentifier():
        raise ConfigError(f"cannot register a technique named {technique.name!r}")
    taken = _TECHNIQUES.get(technique.name)
    if taken is not None and taken.module != technique.module:
        raise ConfigError(f"technique {technique.name!r} is already registered by {taken.module}")
    _TECHNIQUES[technique.name] = technique
    return technique


def unregister(name: str) -> None:
    """Remove a technique (a test's toy technique, once the test is over)."""
    _TECHNIQUES.pop(name, None)


def techniques() -> dict[str, Technique]:
    """Every registered technique by name, the built-in ones first."""
    _import_builtin()
    return dict(_TECHNIQUES)


def get(name: str) -> Technique:
    """The technique called ``name``, or a ConfigError listing the known ones."""
    known = techniques()
    if name not in known:
        raise ConfigError(f"unknown technique {name!r}; use one of {', '.join(known)}")
    return known[name]


@contextlib.contextmanager
def load_scope() -> Iterator[None]:
    """Every technique's custom objects at once, for loading a model whatever compressed it."""
    with contextlib.ExitStack() as stack:
        for technique in techniques().values():
            if technique.load_scope is not None:
                stack.enter_context(technique.load_scope())
        yield


def strip(model):
    """``model`` without any technique's training-only wrappers (what export converts)."""
    for technique in techniques().values():
        if technique.strip is not None:
            model = technique.strip(model)
    return model


@functools.cache
def _import_builtin() -> None:
    """Import every public module of :mod:`kerascomp.compress`; the techniques among them register."""
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


saving.install_technique_hooks(scope=load_scope, strip=strip)
