"""Exceptions for input that kerascomp cannot use.

The CLI turns every :class:`KerascompError` into one ``Error:`` line and a
non-zero exit; anything else is a bug and keeps its traceback for debugging.
"""

__all__ = ["KerascompError", "DataError", "ModelError", "Unreachable", "ConfigError", "Interrupted", "first_line"]


class KerascompError(Exception):
    """Base class: bad input a user can fix."""


class DataError(KerascompError, ValueError):
    """A dataset spec or file that cannot be loaded or used."""


class ModelError(KerascompError, ValueError):
    """An unknown model, a bad model argument, or a model file that cannot be used."""


class Unreachable(ModelError):
    """A compression setting beyond what the model allows (e.g. fewer channels than its smallest form).

    A strength search takes it as the end of its ladder, not as a failure of the run.
    """


class ConfigError(KerascompError, ValueError):
    """A configuration value that is missing, unknown or out of range."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the work: the message says what was kept and how to go on.

    A ``KeyboardInterrupt`` still, so code that lets Ctrl-C through lets this through. ``kept`` carries what
    the interrupted step can hand on (a search's strongest passing model) to the layer that knows where to
    write it.
    """

    def __init__(self, message: str = "interrupted", kept: object = None):
        super().__init__(message)
        self.kept = kept


def first_line(exc: BaseException, prefer: str | None = None) -> str:
    """The most telling line of an exception's message, for a one-line ``Error:``.

    Converters and loaders put whole logs into their messages; ``prefer`` picks
    the first line that contains it (case-insensitive), e.g. ``"error"``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    preferred = [line for line in lines if prefer and prefer in line.lower()]
    return (preferred or lines or [type(exc).__name__])[0]
