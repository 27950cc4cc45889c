"""What the measurement scripts share: a CLI call printed as a user would type it."""

from __future__ import annotations

from kerascomp.cli import main


def run(*args: str) -> int:
    """``kerascomp ARGS`` in this process; returns its exit code."""
    print("$ kerascomp " + " ".join(args), flush=True)
    return main([*args])
