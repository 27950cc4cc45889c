"""File output and identity: atomic writes (an interrupted step never leaves a half-written artifact), one writer
per output folder, sidecars, hashes.

Every artifact kerascomp writes has a JSON sidecar beside it
(``name.keras.json``, ``name.tflite.json``); :func:`scaling_of` is the one
reader of the input scaling it records.
"""

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from kerascomp.errors import KerascompError

__all__ = ["atomic_path", "write_bytes", "one_writer", "sidecar_path", "scaling_of", "write_json", "file_sha256", "LOCK_FILE"]

LOCK_FILE = ".kerascomp.lock"


_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "over the disk quota",
        errno.EFBIG: "over the file size limit"}  # the writes that fail for space, in words


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needs: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the final suffix because Keras picks the save
    format from it. On any exception the temporary file is removed and ``path``
    is left as it was. A full disk is one :class:`KerascompError` naming the
    file and the space: ``needs`` bytes where the writer knows them, else what
    was written before the disk filled.
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
    except OSError as exc:
        reason = _full(exc)
        if reason is None:
            raise
        wanted = _amount(needs) if needs else f"over {_amount(tmp.stat().st_size if tmp.exists() else 0)}"
        tmp.unlink(missing_ok=True)  # before counting what is free: the part written is given back
        raise KerascompError(f"cannot write {path} ({reason}): it needs {wanted}, "
                             f"{_amount(shutil.disk_usage(path.parent).free)} free there; {path.name} was not written "
                             "(free space, then run it again; a pipeline goes on with --resume)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _full(exc: OSError) -> str | None:
    """Why a write failed for space, or None; writers that wrap the C error (h5py) keep only its words."""
    code = exc.errno or next((c for c in _FULL if os.strerror(c) in str(exc)), None)
    return _FULL.get(code)


def _amount(size: int) -> str:
    """Bytes as a person reads them, in the KB (1,024 bytes) of kerascomp's tables."""
    return f"{size:,} bytes" if size < 10_240 else f"{size / 2**20:,.2f} MB" if size >= 2**20 else f"{size / 2**10:,.1f} KB"


@contextlib.contextmanager
def one_writer(folder: str | os.PathLike, what: str = "kerascomp run") -> Iterator[None]:
    """Hold ``folder`` for this process: two runs writing one folder would interleave its state and artifacts.

    The lock file holds the owner's pid, so a lock left by a process that died
    (``kill -9``) is taken over instead of blocking the folder for ever.
    """
    lock = Path(folder) / LOCK_FILE
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and _alive(owner):
                raise KerascompError(f"{folder} is being written by another {what} (pid {owner}); wait for it to "
                                     "finish or choose another --out") from None
            lock.unlink(missing_ok=True)  # its owner is gone: take the folder over
            continue
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        break
    else:  # taken over by another process between our two tries
        raise KerascompError(f"{folder} is being written by another {what}; choose another --out")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):  # gone meanwhile, or written by no kerascomp
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


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


def write_bytes(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) atomically; a full disk is told with the bytes it needs."""
    data = data.encode() if isinstance(data, str) else data
    with atomic_path(path, needs=len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in chunks so a large dataset never sits in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
