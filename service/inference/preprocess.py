"""Where an image or a tensor becomes the model's input array.

Images: decode with Pillow (size checked from the header before any pixel is decoded), EXIF
orientation applied (phones store portrait shots rotated, with an Orientation tag), grayscale,
automatic polarity (a dark object on a light background is inverted to match Fashion-MNIST's light
objects on black), aspect-preserving resize and zero padding to the model's input size, scale to [0, 1].

Tensors: checked for rank, shape, dtype and finite values against the model's input spec *before*
they reach TensorFlow (a wrong rank can abort the process inside TensorFlow).
"""

from __future__ import annotations

import io
import logging
import math
import threading

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.core.errors import InferenceTimeout, InvalidInput, PayloadTooLarge
from service.core.request import Polarity
from service.core.tensors import TensorInput, to_array

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"})
_FORMATS = sorted(SUPPORTED_FORMATS)
_BORDER_LIGHT_THRESHOLD = 127.5
_PYTHON_SUM_PIXELS = 1024  # border pixels up to which Python sums them (under 20 µs), numpy above
_BYTES_PER_BAND = {"I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}

_ONE_BITS = int(np.float32(1.0).view(np.uint32))  # 0x3F800000


def open_header(data: bytes, max_pixels: int, what: str = "image") -> Image.Image:
    """An encoded image with only its header read (no pixel decoded), refusing oversize or broken files."""
    if not data:
        raise InvalidInput(f"{what}: empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except UnidentifiedImageError:
        raise InvalidInput(
            f"{what}: not a decodable image (supported: {', '.join(sorted(SUPPORTED_FORMATS))})"
        ) from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above any sane max_pixels
        raise PayloadTooLarge(f"{what}: image size exceeds the limit of {max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        logger.info("%s: unreadable image header: %s", what, exc)
        raise InvalidInput(f"{what}: truncated or corrupt image header") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput(f"{what}: image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{what}: {width}×{height} = {width * height} pixels exceeds the limit of {max_pixels}")
    return image


def decode(image: Image.Image, what: str = "image") -> Image.Image:
    """The pixels of an image whose header :func:`open_header` read (first frame), upright."""
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        logger.info("%s: unreadable %s data: %s", what, image.format, exc)
        raise InvalidInput(f"{what}: truncated or corrupt {image.format} data") from None
    return upright(image)


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF Orientation tag, so a rotated phone photo is seen the way it was taken."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as exc:  # a broken EXIF block
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
    return image


def to_grayscale(image: Image.Image) -> Image.Image:
    """8-bit grayscale; transparent areas become white (like a product photo's background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # One float32 copy, stretched to 0–255 in place: a 40-megapixel image needs 160 MB once, not several
        # float64 temporaries of 320 MB, each paid for in page faults.
        array = np.array(image, dtype=np.float32)
        low, high = array.min(), array.max()  # float32; NaN and ±inf show in these
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InvalidInput("image has NaN or infinite pixel values")
        array -= low
        if high > low:
            # high - low in float32 is what the brightest pixel now holds: it becomes exactly 1.0, then 255
            array /= high - low
            array *= 255
        return Image.fromarray(array.astype(np.uint8), mode="L")
    if image.mode == "L":
        return image
    try:
        return image.convert("L")
    except ValueError:  # modes Pillow cannot convert, e.g. LAB
        raise InvalidInput(f"unsupported image mode {image.mode}") from None


def has_light_background(pixels: np.ndarray) -> bool:
    """True when the outermost rows and columns of 8-bit grayscale ``pixels`` are light on average."""
    height, width = pixels.shape
    count = 2 * (width + height)  # the corners count twice
    if count <= _PYTHON_SUM_PIXELS:  # for an image of model size, numpy's per-call cost would be most of the work
        flat = memoryview(np.ascontiguousarray(pixels)).cast("B")
        border = sum(flat[:width]) + sum(flat[-width:]) + sum(flat[::width]) + sum(flat[width - 1 :: width])
    else:  # numpy for a long border (a 40-megapixel strip): Python's sum would hold the GIL for a second
        edges = (pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1])
        border = sum(int(edge.sum(dtype=np.uint64)) for edge in edges)
    return border > _BORDER_LIGHT_THRESHOLD * count


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


def prepare(image: Image.Image, height: int, width: int, *, polarity: Polarity, what: str = "image") -> np.ndarray:
    """An image whose header was read → float32 ``(height, width, 1)`` in [0, 1]."""
    gray = to_grayscale(decode(image, what))
    pixels = np.asarray(gray, dtype=np.uint8)  # read once: the background check and, at the input size, the answer
    invert = polarity is Polarity.invert or (polarity is Polarity.auto and has_light_background(pixels))
    if gray.size == (width, height):
        fitted = 255 - pixels if invert else pixels
    else:
        fitted = fit_to_canvas(ImageOps.invert(gray) if invert else gray, height, width)
    return (fitted.astype(np.float32) / 255.0)[..., np.newaxis]


def read_headers(blobs: list[bytes], max_pixels: int, max_request_pixels: int) -> tuple[list[Image.Image], int]:
    """The images with only their headers read, and what decoding them costs: the bytes of their pixels
    (width × height × bands × bytes per band). Refuses an image over ``max_pixels``, or a request over
    ``max_request_pixels`` in all, before any pixel is decoded."""
    if not blobs:
        raise InvalidInput("no images in the request")
    images = [open_header(blob, max_pixels, f"image {i}") for i, blob in enumerate(blobs)]
    pixels = sum(image.width * image.height for image in images)
    if pixels > max_request_pixels:
        raise PayloadTooLarge(f"the images hold {pixels} pixels in all, over the limit of {max_request_pixels}")
    size = sum(
        image.width * image.height * len(image.getbands()) * _BYTES_PER_BAND.get(image.mode, 1) for image in images
    )
    return images, size


def images_to_batch(
    images: list[Image.Image], height: int, width: int, *, polarity: Polarity, stop: threading.Event | None = None
) -> np.ndarray:
    """Decode and prepare each image (headers read by :func:`read_headers`); when ``stop`` is set (the
    request timed out, or its client left), the images not yet begun are left undecoded."""
    arrays = []
    for i, image in enumerate(images):
        if stop is not None and stop.is_set():
            raise InferenceTimeout("decoding stopped: the request timed out or its client left")
        arrays.append(prepare(image, height, width, polarity=polarity, what=f"image {i}"))
    return arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)


def tensor_to_batch(tensor: TensorInput, input_shape: tuple[int, ...]) -> np.ndarray:
    """A tensor as sent → float32 ``(n, h, w, c)`` in [0, 1], checked against the model input ``(h, w, c)``.

    Accepts ``(n, h, w)`` when ``c == 1``. Integer pixels must hold 0–255 and are scaled by 1/255;
    floating pixels must be finite and within [0, 1].
    """
    return _checked_batch(to_array(tensor), input_shape)


def _checked_batch(array: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
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
    if array.shape[0] == 0:
        raise InvalidInput("empty batch: the tensor holds no images")
    if array.dtype.kind in "ui":
        if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):  # uint8 holds nothing else
            raise InvalidInput("integer pixel values must be within 0–255")
        return array.astype(np.float32) / 255.0
    values = array.astype(np.float32, copy=False)
    # One pass for the usual case: read as unsigned integers, the floats from +0.0 to 1.0 are exactly those
    # at most 1.0's bits (a sign bit, NaN or infinity reads larger). Anything else, -0.0 included, gets
    # the full check.
    if values.view(np.uint32).max() > _ONE_BITS and not (values.min() >= 0.0 and values.max() <= 1.0):
        if not np.isfinite(values).all():  # NaN fails both comparisons above, as do ±inf
            raise InvalidInput("tensor contains NaN or infinity")
        raise InvalidInput("float pixel values must be within [0, 1]; divide 0–255 pixel values by 255")
    return values
