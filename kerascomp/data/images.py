"""Read raw inputs for prediction on a device: image files or an .npz, with PIL and numpy only."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from kerascomp.data.datasets import IMAGE_SUFFIXES
from kerascomp.errors import DataError


def read_inputs(paths: Sequence[str], input_shape: Sequence[int],
                warn: Callable[[str], None] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, raw pixels)`` shaped like ``input_shape``, unscaled (the model's sidecar scales them).

    Images are resized to the model's height and width and converted to its
    channel count (``warn`` hears once per foreign size, since a resized
    image is not what the model was trained on); an ``.npz`` yields every
    image of its ``x_test`` (or ``x``) array.
    """
    warned: set[tuple[int, int]] = set()
    for path in _files(paths):
        if path.suffix.lower() == ".npz":
            yield from _npz_images(path, input_shape)
        else:
            pixels, size = _image(path, input_shape)
            if size != tuple(input_shape[:2]) and size not in warned and warn is not None:
                warned.add(size)
                warn(f"{path} is {size[0]}x{size[1]}; resized to the model's {input_shape[0]}x{input_shape[1]}")
            yield str(path), pixels


def far_off(peak: float, trained_peak: float, factor: float = 4.0) -> bool:
    """Whether inputs peaking at ``peak`` look like another pixel range than the training inputs' (``trained_peak``).

    0..255 images fed to a model trained on 0..16 digits (or the reverse) run
    without error and answer with other confidences: worth one warning.
    """
    return trained_peak > 0 and peak > 0 and not trained_peak / factor <= peak <= factor * trained_peak


def _files(paths: Sequence[str]) -> Iterator[Path]:
    """Every file named, a folder standing for the images (and ``.npz`` files) in it, walked in sorted order."""
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npz"))
            if not found:
                raise DataError(f"input folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}) or .npz files")
            yield from found
        elif path.is_file():
            yield path
        else:
            raise DataError(f"input {path} not found")


def _image(path: Path, input_shape: Sequence[int]) -> tuple[np.ndarray, tuple[int, int]]:
    from PIL import Image, UnidentifiedImageError

    height, width, channels = input_shape
    try:
        with Image.open(path) as image:
            size = (image.height, image.width)
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return pixels.reshape(height, width, channels), size


def _npz_images(path: Path, input_shape: Sequence[int]) -> Iterator[tuple[str, np.ndarray]]:
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot read {path} as .npz: not a NumPy .npz archive")
    with np.load(path, allow_pickle=False) as archive:
        key = next((k for k in ("x_test", "x") if k in archive.files), None)
        if key is None:
            raise DataError(f"{path} has no x_test or x array")
        images = archive[key]
    if images.ndim == len(input_shape):  # (N, H, W) for a (H, W, 1) model
        images = images[..., None]
    if tuple(images.shape[1:]) != tuple(input_shape):
        raise DataError(f"{path}: images are {images.shape[1:]} but the model expects {tuple(input_shape)}")
    for i, image in enumerate(images):
        yield f"{path}[{i}]", image.astype(np.float32)
