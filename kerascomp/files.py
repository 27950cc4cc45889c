"""File output and identity: atomic writes (an interrupted step never leaves a half-written artifact), sidecars, hashes.

Every artifact kerascomp writes has a JSON sidecar beside it
(``name.keras.json``, ``name.tflite.json``); :func:`scaling_of` is the one
reader of the input scaling it records.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "sidecar_path", "scaling_of", "write_json", "file_sha256"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the final suffix because Keras picks the save
    format from it. On any exception the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as Keras refuse to overwrite or expect no file
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sidecar_path(path: str | os.PathLike) -> Path:
    """The sidecar JSON beside an artifact: ``name.keras`` -> ``name.keras.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def scaling_of(meta: dict | None) -> dict | None:
    """The input scaling a sidecar records (raw pixels -> model inputs), or None when it records none.

    Sidecars keep it at the top level (``scaling``); ``.keras`` sidecars written
    before that kept it only inside their data description (``data.scaling``),
    which is still read.
    """
    meta = meta or {}
    return meta.get("scaling") or (meta.get("data") or {}).get("scaling")


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in chunks so a large dataset never sits in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
