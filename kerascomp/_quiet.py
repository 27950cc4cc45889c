"""Keep native libraries' start-up lines (TensorFlow, CUDA probes, LiteRT's delegate notice) off the console.

Those lines bypass Python's logging and ``TF_CPP_MIN_LOG_LEVEL`` and would
bury the one-line errors and summaries of the CLI. No TensorFlow import here:
the edge runtime uses it too.
"""

import contextlib
import os
import sys

__all__ = ["quiet_native_stderr"]


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
