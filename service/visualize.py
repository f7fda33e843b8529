"""Feature maps as a PNG grid: one tile per channel, each normalised to its own min–max."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

_MIN_TILE_PX = 56
_GAP_PX = 2
_GAP_VALUE = 64


def _normalise(tile: np.ndarray) -> np.ndarray:
    low, high = float(tile.min()), float(tile.max())
    if high - low < 1e-12:
        return np.zeros_like(tile, dtype=np.uint8)
    return ((tile - low) / (high - low) * 255).astype(np.uint8)


def feature_grid(activation: np.ndarray) -> Image.Image:
    """One image's activation ``(h, w, c)`` (or a vector ``(units,)``) → a grayscale grid image."""
    if activation.ndim == 1:  # dense layer: one row of units
        strip = _normalise(activation)[np.newaxis, :]
        scale = max(1, 1024 // max(1, strip.shape[1]))
        return Image.fromarray(strip).resize((strip.shape[1] * scale, 32), Image.Resampling.NEAREST)
    if activation.ndim != 3:
        raise ValueError(f"cannot draw an activation of shape {activation.shape}")
    height, width, channels = activation.shape
    columns = math.ceil(math.sqrt(channels))
    rows = math.ceil(channels / columns)
    scale = max(1, math.ceil(_MIN_TILE_PX / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    canvas = np.full(
        (rows * tile_h + (rows - 1) * _GAP_PX, columns * tile_w + (columns - 1) * _GAP_PX), _GAP_VALUE, np.uint8
    )
    for channel in range(channels):
        row, column = divmod(channel, columns)
        tile = np.kron(_normalise(activation[:, :, channel]), np.ones((scale, scale), np.uint8))
        top, left = row * (tile_h + _GAP_PX), column * (tile_w + _GAP_PX)
        canvas[top : top + tile_h, left : left + tile_w] = tile
    return Image.fromarray(canvas)


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
