"""What the measurement scripts share: a CLI call printed as a user would type it, and writing the results."""

from __future__ import annotations

from pathlib import Path

from kerascomp.cli import main
from kerascomp.files import atomic_path, write_json


def run(*args: str) -> int:
    """``kerascomp ARGS`` in this process; returns its exit code."""
    print("$ kerascomp " + " ".join(args), flush=True)
    return main([*args])


def write_results(out: Path, stem: str, result: dict, markdown: str) -> None:
    """``out/stem.json`` and ``out/stem.md`` (each written whole or not at all), and the table on the console."""
    write_json(out / f"{stem}.json", result)
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(markdown)
    print(markdown)
