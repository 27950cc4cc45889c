"""What kerascomp says to a person: one ``echo`` for the library, and native chatter kept off the console.

The pipeline and the techniques report progress through :func:`echo`, never
through a command-line framework, so a notebook or a service can take the
lines (:func:`set_echo`) and the CLI stays the only layer that knows click.
Native libraries' start-up lines (TensorFlow, CUDA probes, LiteRT's delegate
notice) bypass Python's logging and ``TF_CPP_MIN_LOG_LEVEL``;
:func:`quiet_native_stderr` keeps them from burying the CLI's one-line errors
and summaries. No TensorFlow import here: the edge runtime uses it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

__all__ = ["echo", "set_echo", "quiet_native_stderr"]

_sink: Callable[[str], None] | None = None


def echo(text: str) -> None:
    """Say ``text`` (one line) to the person running kerascomp: stdout unless :func:`set_echo` chose elsewhere."""
    if _sink is not None:
        _sink(text)
    else:
        print(text, flush=True)


def set_echo(sink: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Send every :func:`echo` line to ``sink`` (None: back to stdout); returns the previous sink."""
    global _sink
    previous, _sink = _sink, sink
    return previous


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence what TensorFlow's C++ side prints while it loads (absl and CUDA-probe lines).

    Those lines bypass ``TF_CPP_MIN_LOG_LEVEL`` and would bury the one-line
    errors and summaries of the CLI. Python exceptions are unaffected; set
    ``KERASCOMP_DEBUG=1`` to see everything.
    """
    if os.environ.get("KERASCOMP_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
