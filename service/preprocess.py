"""Where an image or a tensor becomes the model's input array.

Images: decode with Pillow (size checked from the header before any pixel is decoded), grayscale,
automatic polarity (a dark object on a light background is inverted to match Fashion-MNIST's light
objects on black), aspect-preserving resize and zero padding to the model's input size, scale to [0, 1].

Tensors: checked for rank, shape, dtype and finite values against the model's input spec *before*
they reach TensorFlow (a wrong rank can abort the process inside TensorFlow).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from enum import StrEnum
from itertools import chain

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput, PayloadTooLarge

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"})
_BORDER_LIGHT_THRESHOLD = 127.5


class Polarity(StrEnum):
    """How to treat image brightness: detect from the border, force inversion, or keep as sent."""

    auto = "auto"
    invert = "invert"
    keep = "keep"


def decode_base64(value: str, what: str = "image") -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{what}: invalid base64 ({exc})") from None


def open_image(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """Decode an encoded image (first frame of animations), refusing oversize or broken files."""
    if not data:
        raise InvalidInput(f"{what}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(SUPPORTED_FORMATS))
    except UnidentifiedImageError:
        raise InvalidInput(
            f"{what}: not a decodable image (supported: {', '.join(sorted(SUPPORTED_FORMATS))})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{what}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{what}: truncated or corrupt image header ({exc})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput(f"{what}: image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{what}: {width}×{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"{what}: truncated or corrupt {image.format} data ({exc})") from None
    return image


def to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale; transparent areas become white (like a product photo's background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = array.max() - array.min()
        scaled = (array - array.min()) / span * 255 if span else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    try:
        return image.convert("L")
    except ValueError as exc:  # modes Pillow cannot convert, e.g. LAB
        raise InvalidInput(f"unsupported image mode {image.mode} ({exc})") from None


def has_light_background(gray: Image.Image) -> bool:
    """True when the outermost rows and columns are light on average."""
    pixels = np.asarray(gray, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return float(border.mean()) > _BORDER_LIGHT_THRESHOLD


def fit_to_canvas(gray: Image.Image, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the longer side fills the canvas, then centre on black."""
    if gray.size != (width, height):
        scale = min(width / gray.width, height / gray.height)
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        resized = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        canvas = Image.new("L", (width, height), 0)
        canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
        gray = canvas
    return np.asarray(gray, dtype=np.uint8)


def image_to_array(
    data: bytes, height: int, width: int, *, polarity: Polarity, max_pixels: int, what: str = "image"
) -> np.ndarray:
    """Encoded image bytes → float32 ``(height, width, 1)`` in [0, 1]."""
    gray = to_grayscale(open_image(data, max_pixels, what))
    if polarity is Polarity.invert or (polarity is Polarity.auto and has_light_background(gray)):
        gray = ImageOps.invert(gray)
    return (fit_to_canvas(gray, height, width).astype(np.float32) / 255.0)[..., np.newaxis]


def images_to_batch(blobs: list[bytes], height: int, width: int, *, polarity: Polarity, max_pixels: int) -> np.ndarray:
    if not blobs:
        raise InvalidInput("no images in the request")
    arrays = [
        image_to_array(blob, height, width, polarity=polarity, max_pixels=max_pixels, what=f"image {i}")
        for i, blob in enumerate(blobs)
    ]
    return np.stack(arrays)


def validate_tensor(
    array: np.ndarray, input_shape: tuple[int, ...], *, max_images: int, scale_uint8: bool = True
) -> np.ndarray:
    """Check a batch against the model input ``(h, w, c)`` and return float32 ``(n, h, w, c)`` in [0, 1].

    Accepts ``(n, h, w)`` when ``c == 1``. Integer tensors must hold 0–255 and are scaled by 1/255;
    floating tensors must be finite and within [0, 1].
    """
    if array.dtype == object or array.dtype.kind not in "uif":
        raise InvalidInput(f"tensor must be numeric, got dtype {array.dtype}")
    expected = tuple(input_shape)
    if array.ndim == len(expected) and expected[-1] == 1 and array.shape[1:] == expected[:-1]:
        array = array[..., np.newaxis]
    if array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected:
        shape = "×".join(map(str, expected))
        raise InvalidInput(
            f"tensor shape {list(array.shape)} does not match the model input [n, {', '.join(map(str, expected))}]"
            f" (a batch of n {shape} images)"
        )
    count = array.shape[0]
    if count == 0:
        raise InvalidInput("empty batch: the tensor holds no images")
    if count > max_images:
        raise PayloadTooLarge(f"{count} images in one request exceeds the limit of {max_images}")
    if array.dtype.kind in "ui":
        if array.min() < 0 or array.max() > 255:
            raise InvalidInput("integer pixel values must be within 0–255")
        return array.astype(np.float32) / 255.0 if scale_uint8 else array.astype(np.float32)
    values = array.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise InvalidInput("tensor contains NaN or infinity")
    if values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInput("float pixel values must be within [0, 1]; divide 0–255 pixel values by 255")
    return values


def _flatten_nested(data: object) -> np.ndarray:
    """Nested lists → array, level by level: about twice as fast as ``np.asarray`` on a JSON tensor.

    Each level must hold lists of one length (else ``ValueError``); the leaves go to numpy in one call.
    """
    shape: list[int] = []
    items = [data]
    while items and type(items[0]) is list:
        lengths = set(map(len, items))  # TypeError when a list sits beside a number
        if len(lengths) != 1:
            raise ValueError(f"lists of lengths {sorted(lengths)[:4]} at depth {len(shape)}")
        shape.append(lengths.pop())
        items = list(chain.from_iterable(items))
    return np.array(items).reshape(shape)


def tensor_from_json(data: object, dtype: str | None = None) -> np.ndarray:
    """Nested JSON lists → numpy, refusing ragged or non-numeric data with a 400."""
    try:
        array = _flatten_nested(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"tensor is not a rectangular array of numbers ({exc})") from None
    if array.dtype == object or array.dtype.kind not in "uif":  # no booleans, no strings
        raise InvalidInput("tensor must contain only numbers")
    return array.astype(dtype) if dtype is not None else array
