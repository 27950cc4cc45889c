"""Exceptions for input that kerascomp cannot use.

The CLI turns every :class:`KerascompError` into one ``Error:`` line and a
non-zero exit; anything else is a bug and keeps its traceback for debugging.
"""

__all__ = ["KerascompError", "DataError", "ModelError", "ConfigError"]


class KerascompError(Exception):
    """Base class: bad input a user can fix."""


class DataError(KerascompError, ValueError):
    """A dataset spec or file that cannot be loaded or used."""


class ModelError(KerascompError, ValueError):
    """An unknown model, a bad model argument, or a model file that cannot be used."""


class ConfigError(KerascompError, ValueError):
    """A configuration value that is missing, unknown or out of range."""
