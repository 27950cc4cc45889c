"""What a pipeline stage depends on, by content, so ``--resume`` re-runs exactly what changed.

A stage's inputs are its kind and options, the seed, the kerascomp version,
the data's *bytes* (not its name: a replaced ``.npz`` of the same shape is new
data), the files it reads (a ``teacher: {path:}`` model, every model and
artifact produced before it) and the key of the stage before it. The key is
their hash; the inputs themselves are kept in the run's state so a re-run can
say which of them changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from kerascomp import __version__
from kerascomp.data.datasets import EMBEDDED
from kerascomp.files import file_sha256, sidecar_path

__all__ = ["data_digest", "path_digest", "stage_inputs", "key", "changes"]


def path_digest(path: str | os.PathLike) -> str:
    """A file's SHA-256 (with its JSON sidecar, which carries the input scaling), or a folder's listing.

    A folder (image dataset, SavedModel) is identified by every file's
    relative path, size and modification time: re-hashing thousands of images
    on every resume would cost more than the stages it saves.
    """
    path = Path(path)
    if path.is_dir():
        listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in sorted(path.rglob("*")) if p.is_file()]
        return _hash(listing)
    if not path.is_file():
        return "missing"
    sidecar = sidecar_path(path)
    return _hash([file_sha256(path), file_sha256(sidecar) if sidecar.is_file() else None])


def data_digest(spec: str) -> str:
    """The content of a data spec: the file or folder it names; the embedded and TFDS sets by name and version."""
    if spec in EMBEDDED:
        import sklearn

        return f"{spec} (scikit-learn {sklearn.__version__})"
    if spec.startswith("tfds:"):
        return spec
    return path_digest(Path(spec).expanduser())


def stage_inputs(kind: str, options: dict, *, seed: int, data: dict, reads: dict[str, str], before: str) -> dict:
    """Everything a stage's result depends on, as one JSON-able record."""
    return {"kerascomp": __version__, "kind": kind, "options": options, "seed": seed, "data": data,
            "files": {name: path_digest(path) for name, path in reads.items()}, "before": before}


def key(inputs: dict) -> str:
    return _hash(inputs)[:16]


def changes(previous: dict | None, current: dict) -> str:
    """Why a stage runs again, in words: the inputs that differ from its last run."""
    if not previous:
        return "no record of its inputs"
    words = []
    if previous.get("kerascomp") != current["kerascomp"]:
        words.append(f"kerascomp {previous.get('kerascomp')} -> {current['kerascomp']}")
    if previous.get("data") != current["data"]:
        words.append("data changed")
    if previous.get("seed") != current["seed"]:
        words.append("seed changed")
    if (previous.get("kind"), _hash(previous.get("options"))) != (current["kind"], _hash(current["options"])):
        words.append("options changed")
    old_files = previous.get("files") or {}
    words += [f"{name} changed" for name, digest in current["files"].items() if old_files.get(name) != digest]
    if not words and previous.get("before") != current["before"]:
        words.append("an earlier stage changed")
    return ", ".join(words) or "its outputs are missing"


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
