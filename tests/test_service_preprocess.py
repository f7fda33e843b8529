"""Image decoding, polarity, resizing and tensor validation (no model needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.core.errors import InvalidInput, PayloadTooLarge
from service.core.request import Polarity
from service.core.tensors import BY_NAME, TensorInput
from service.inference.preprocess import (
    decode,
    fit_to_canvas,
    has_light_background,
    images_to_batch,
    open_header,
    read_headers,
    tensor_to_batch,
    to_grayscale,
)

from .conftest import png_bytes


def image_to_array(data: bytes, height: int, width: int, *, polarity: Polarity, max_pixels: int):
    """One image file through the service's path: its header, then its pixels, as model input."""
    images, _ = read_headers([data], max_pixels, max_pixels)
    return images_to_batch(images, height, width, polarity=polarity)[0]


def open_image(data: bytes, max_pixels: int):
    return decode(open_header(data, max_pixels))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_28x28_grayscale_png_is_exact():
    pixels = np.random.default_rng(1).integers(0, 120, (28, 28), dtype=np.uint8)
    array = image_to_array(png_bytes(pixels), 28, 28, polarity=Polarity.auto, max_pixels=10**6)
    assert array.shape == (28, 28, 1) and array.dtype == np.float32
    np.testing.assert_array_equal(array[..., 0], pixels / np.float32(255))


def test_aspect_preserving_resize_pads_with_black():
    wide = Image.new("L", (112, 56), 200)  # 2:1 → 28×14 centred
    out = fit_to_canvas(wide, 28, 28)
    assert out.shape == (28, 28)
    assert (out[7:21, :] > 150).all() and (out[:7, :] == 0).all() and (out[21:, :] == 0).all()


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (1, 7), (6, 1), (2, 2), (28, 28), (5, 40), (3, 600), (700, 2), (300, 300)]
)
def test_the_background_is_judged_by_the_mean_of_the_outermost_rows_and_columns(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 100 + width)
    for _ in range(50):
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        edges = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        assert has_light_background(pixels) == (edges.mean() > 127.5)
    inside = np.full((height + 2, width + 2), 255, np.uint8)
    inside[[0, -1]] = inside[:, [0, -1]] = 127
    assert not has_light_background(inside)  # the border alone counts, and 127 is dark
    inside[[0, -1]] = inside[:, [0, -1]] = 128
    assert has_light_background(inside)


def test_auto_polarity_inverts_light_backgrounds():
    photo = np.full((40, 40), 255, np.uint8)
    photo[10:30, 10:30] = 30  # dark object on white
    array = image_to_array(png_bytes(photo), 28, 28, polarity=Polarity.auto, max_pixels=10**6)
    assert array[0, 0, 0] == 0.0 and array[14, 14, 0] > 0.8
    kept = image_to_array(png_bytes(photo), 28, 28, polarity=Polarity.keep, max_pixels=10**6)
    assert kept[14, 14, 0] < 0.2
    forced = image_to_array(png_bytes(255 - photo), 28, 28, polarity=Polarity.invert, max_pixels=10**6)
    assert forced[14, 14, 0] < 0.2


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGB", "JPEG"), ("RGBA", "PNG"), ("L", "BMP"), ("P", "GIF"), ("RGB", "WEBP"), ("I;16", "PNG"), ("1", "TIFF")],
)
def test_formats_and_modes_decode(mode, fmt):
    base = Image.new("L", (60, 30), 0)
    base.paste(220, (20, 5, 40, 25))
    image = base.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(base, np.uint16) * 256)
    array = image_to_array(encode(image, fmt), 28, 28, polarity=Polarity.auto, max_pixels=10**6)
    assert array.shape == (28, 28, 1) and array[14, 14, 0] > 0.5 and array[2, 2, 0] < 0.1


@pytest.mark.parametrize(
    ("values", "mode"),
    [(np.array([[1000, 2000, 3000]], np.uint16), "I;16"), (np.array([[-7, 0, 7]], np.int32), "I"),
     (np.array([[0.25, 0.5, 0.75]], np.float32), "F")],
)  # fmt: skip
def test_deep_images_are_stretched_to_eight_bits(values: np.ndarray, mode: str) -> None:
    image = Image.fromarray(values)
    assert image.mode == mode
    gray = to_grayscale(image)
    assert gray.mode == "L" and np.asarray(gray).tolist() == [[0, 127, 255]]
    flat = to_grayscale(Image.fromarray(np.full((2, 2), values.flat[1], values.dtype)))
    assert np.asarray(flat).tolist() == [[0, 0], [0, 0]]


def test_transparent_background_counts_as_light():
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    rgba.paste((10, 10, 10, 255), (10, 10, 20, 20))
    array = image_to_array(encode(rgba, "PNG"), 28, 28, polarity=Polarity.auto, max_pixels=10**6)
    assert array[0, 0, 0] == 0.0 and array[14, 14, 0] > 0.8


def test_broken_and_oversize_images():
    good = png_bytes(np.zeros((28, 28), np.uint8))
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        open_image(good[:-20], 10**6)
    with pytest.raises(InvalidInput, match="not a decodable image"):
        open_image(b"%PDF-1.4 not an image", 10**6)
    with pytest.raises(InvalidInput, match="empty"):
        open_image(b"", 10**6)
    with pytest.raises(PayloadTooLarge, match="pixels exceeds"):
        open_image(png_bytes(np.zeros((100, 100), np.uint8)), 5_000)


def test_tensor_to_batch_rules():
    ok = tensor_to_batch(TensorInput(np.zeros((2, 28, 28))), (28, 28, 1))
    assert ok.shape == (2, 28, 28, 1) and ok.dtype == np.float32
    scaled = tensor_to_batch(TensorInput(np.full((1, 28, 28, 1), 255, np.int64)), (28, 28, 1))
    assert scaled.max() == 1.0
    nested = tensor_to_batch(TensorInput(np.full((1, 28, 28), 51).tolist(), dtype=BY_NAME["uint8"]), (28, 28, 1))
    assert nested.shape == (1, 28, 28, 1) and np.allclose(nested, 0.2)
    flat = tensor_to_batch(
        TensorInput(np.zeros(784 * 2, np.float32), dtype=BY_NAME["float32"], shape=(2, 28, 28, 1)), (28, 28, 1)
    )
    assert flat.shape == (2, 28, 28, 1)
    for bad, message in [
        (TensorInput(np.zeros((1, 3))), "does not match"),
        (TensorInput(np.zeros((28, 28))), "does not match"),
        (TensorInput(np.zeros((0, 28, 28, 1))), "empty batch"),
        (TensorInput(np.full((1, 28, 28, 1), np.nan)), "NaN"),
        (TensorInput(np.full((1, 28, 28, 1), 2.0)), r"within \[0, 1\]"),
        (TensorInput(np.full((1, 28, 28, 1), 300)), "0–255"),
        (TensorInput(np.array([["a"]])), "numeric"),
        (TensorInput([[0.5] * 28] * 28, dtype=BY_NAME["uint8"]), "whole numbers"),
        (TensorInput([[1, 2], [3]]), r"rectangular array of numbers \(lists of lengths \[1, 2\] at depth 1\)"),
        (TensorInput([[0.5], 0.5]), r"rectangular array of numbers \(a number beside lists at depth 1\)$"),
        (TensorInput([0.5, [0.5]]), r"rectangular array of numbers \(a list beside numbers at depth 1\)$"),
        (TensorInput([True]), "only numbers"),
        (
            TensorInput(np.zeros(10, np.float32), dtype=BY_NAME["float32"], shape=(1, 28, 28, 1)),
            "needs 784 values, got 10",
        ),
    ]:
        with pytest.raises(InvalidInput, match=message):
            tensor_to_batch(bad, (28, 28, 1))


@pytest.mark.parametrize(
    "special",
    [0.0, -0.0, 1.0, 1e-45, np.nextafter(np.float32(1), np.float32(2)), -1e-45, -1.0, 2.0, np.inf, -np.inf, np.nan,
     -np.nan],
)  # fmt: skip
def test_float_pixels_are_accepted_exactly_when_finite_and_within_0_and_1(special):
    """The range check reads the floats' bits in one pass first; its verdict is the plain comparisons'."""
    rng = np.random.default_rng(0)
    for images in (1, 3):
        values = rng.random(images * 784, dtype=np.float32)
        values[rng.integers(values.size)] = special
        expected = bool(np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1)
        tensor = TensorInput(values, dtype=BY_NAME["float32"], shape=(images, 28, 28, 1))
        if expected:
            assert np.array_equal(tensor_to_batch(tensor, (28, 28, 1)).ravel(), values)
        else:
            with pytest.raises(InvalidInput, match=r"NaN or infinity|within \[0, 1\]"):
                tensor_to_batch(tensor, (28, 28, 1))


def test_tensor_input_counts_images_without_converting():
    assert TensorInput([[[0.0] * 28] * 28] * 3).count == 3
    assert TensorInput([0.0] * 784 * 5, shape=(5, 28, 28, 1)).count == 5
    assert TensorInput([[[0.0] * 28] * 28] * 3).elements == 3 * 28 * 28


def test_pixel_limit_is_ours_and_decoding_leaves_warning_filters_alone():
    """A header of 10,000 × 10,000 (above Pillow's own warning level) is refused by the server's own check,
    and decoding in many threads at once changes no process-wide warning filter."""
    import struct
    import warnings
    import zlib
    from concurrent.futures import ThreadPoolExecutor

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)
    forged = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(PayloadTooLarge, match="10000×10000 = 100000000 pixels exceeds the limit of 40000000"):
            open_image(forged, 40_000_000)
    filters = list(warnings.filters)
    good = png_bytes(np.zeros((28, 28), np.uint8))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: open_image(good, 10**6), range(400)))
    assert warnings.filters == filters
