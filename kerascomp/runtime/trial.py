"""A first run of a ``.tflite`` file from elsewhere, in a child process: a damaged file must not kill the caller.

A mutated flatbuffer can pass LiteRT's verifier and then crash the
interpreter (a segfault, or an allocation the OOM killer ends: seen by the
fuzz tests). :func:`trial_run` opens the file and runs one batch in a child
process with the edge runtime only (no TensorFlow: about a second); the
caller opens the file itself only after the child came back. The command
line does this for every ``.tflite`` a user names (``predict``, ``bench``);
kerascomp's own freshly converted files are verified on conversion instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from kerascomp.errors import KerascompError, ModelError

__all__ = ["trial_run", "TIMEOUT_S"]

TIMEOUT_S = 120


def trial_run(path: str | os.PathLike) -> None:
    """ModelError, in one line, unless ``path`` opens and runs one batch in a child process."""
    try:
        child = subprocess.run([sys.executable, "-m", __name__, os.fspath(path)], capture_output=True, text=True,
                               timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{path}: a trial run in LiteRT took over {TIMEOUT_S} s; not opened") from None
    if child.returncode < 0:
        raise ModelError(f"{path} crashed the LiteRT interpreter in a trial run "
                         f"({signal.Signals(-child.returncode).name}): a damaged file? Not opened here")
    if child.returncode != 0:
        lines = [line for line in child.stderr.splitlines() if line.startswith("Error: ")]
        raise ModelError(lines[-1].removeprefix("Error: ") if lines else f"{path}: the trial run in LiteRT failed")


def _main(path: str) -> None:
    import numpy as np  # the child's own imports: the edge runtime only

    from kerascomp.runtime.interpreter import load  # in the child: the parent never loads LiteRT for this

    try:
        model = load(path)
        model.predict(np.zeros((1, *(d or 1 for d in model.input_shape)), np.float32))
    except KerascompError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _main(sys.argv[1])
