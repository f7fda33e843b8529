"""Pictures of what a model computes: feature maps as a PNG grid (one tile per channel, each normalised
to its own min–max), and an explanation heatmap laid over the model's input."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

_MIN_TILE_PX = 56
_GAP_PX = 2
_GAP_VALUE = 64


def _stretch_to_bytes(tile: np.ndarray) -> np.ndarray:
    """The tile's own range stretched to 0–255 (a flat tile is black)."""
    low, high = float(tile.min()), float(tile.max())
    if high - low < 1e-12:
        return np.zeros_like(tile, dtype=np.uint8)
    return ((tile - low) / (high - low) * 255).astype(np.uint8)


def feature_grid(activation: np.ndarray) -> Image.Image:
    """One image's activation ``(h, w, c)`` (or a vector ``(units,)``) → a grayscale grid image."""
    if activation.ndim == 1:  # dense layer: one row of units
        strip = _stretch_to_bytes(activation)[np.newaxis, :]
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
        tile = np.kron(_stretch_to_bytes(activation[:, :, channel]), np.ones((scale, scale), np.uint8))
        top, left = row * (tile_h + _GAP_PX), column * (tile_w + _GAP_PX)
        canvas[top : top + tile_h, left : left + tile_w] = tile
    return Image.fromarray(canvas)


# A perceptually ordered dark-to-bright colour scale (blue → cyan → yellow → red), interpolated.
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_COLOURS = np.array([[0, 0, 96], [0, 96, 224], [0, 208, 208], [255, 224, 0], [224, 0, 0]], np.float32)
_OVERLAY_PX = 280


def heat_colours(heatmap: np.ndarray) -> np.ndarray:
    """``(h, w)`` values in [0, 1] → ``(h, w, 3)`` RGB floats 0–255."""
    values = np.clip(heatmap, 0.0, 1.0)
    return np.stack([np.interp(values, _HEAT_STOPS, _HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The model input ``(h, w[, 1])`` in [0, 1] in grey, the heatmap's colours over it where it is high,
    upscaled (nearest neighbour, so pixels stay visible) to about 280 pixels across."""
    grey = np.repeat(np.asarray(image, np.float32).reshape(heatmap.shape)[..., None] * 255.0, 3, axis=-1)
    weight = alpha * np.clip(heatmap, 0.0, 1.0)[..., None]
    blended = (grey * (1 - weight) + heat_colours(heatmap) * weight).round().astype(np.uint8)
    scale = max(1, _OVERLAY_PX // max(heatmap.shape))
    picture = Image.fromarray(blended)
    return picture.resize((heatmap.shape[1] * scale, heatmap.shape[0] * scale), Image.Resampling.NEAREST)


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
