"""Synthetic shapes with a class per pixel: the embedded segmentation data, made here, never downloaded.

Each 32x32 grayscale image holds one to three shapes (square, disc,
triangle) of random size, place and brightness on a noisy, shaded
background; its mask names each pixel's shape (0 is the background, a later
shape covers an earlier one). The images are the same on every machine: a
fixed generator seed makes them, the data seed only splits them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "SIZE", "COUNT", "make_shapes"]

CLASSES = ("background", "square", "disc", "triangle")
SIZE = 32
COUNT = 1200
_GENERATOR_SEED = 20261207


def make_shapes(count: int = COUNT, size: int = SIZE, seed: int = _GENERATOR_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images ``(N, size, size, 1)`` as uint8 pixels and their masks ``(N, size, size)`` as int64."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((size, size), dtype=np.float32)
    images = np.empty((count, size, size), dtype=np.float32)
    masks = np.zeros((count, size, size), dtype=np.int64)
    for i in range(count):
        slope = rng.uniform(-1, 1, 2) * 0.15 / size
        image = 0.2 + slope[0] * rows + slope[1] * cols + rng.normal(0, 0.04, (size, size))
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, len(CLASSES)))
            inside = _shape(kind, rows, cols, rng, size)
            image[inside] = rng.uniform(0.45, 1.0) + rng.normal(0, 0.04, int(inside.sum()))
            masks[i][inside] = kind
        images[i] = image
    pixels = np.clip(images * 255, 0, 255).round().astype(np.uint8)
    return pixels[..., None], masks


def _shape(kind: int, rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Where shape ``kind`` covers the image: a boolean mask of a square, a disc or an upright triangle."""
    half = rng.uniform(3, size / 5)
    centre = rng.uniform(half, size - half, 2)
    dy, dx = rows - centre[0], cols - centre[1]
    if kind == 1:
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if kind == 2:
        return dy ** 2 + dx ** 2 <= half ** 2
    return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)  # apex up, base 2*half wide at the bottom
