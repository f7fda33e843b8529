"""Request bodies built from real Fashion-MNIST test images, written to files for wrk's Lua script.

Each scenario is a directory of ``body-<i>`` files, each with a ``body-<i>.headers`` file of
``Name: value`` lines; ``bench/lua/post.lua`` sends them round-robin.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.data import read_idx, resolve_data_dir, to_model_input

TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
MULTIPART_BOUNDARY = "benchboundary7MA4YWxkTrZu0gW"


@dataclass(frozen=True)
class Payload:
    """A directory of request bodies for one scenario, and how many images each body carries."""

    name: str
    directory: Path
    bodies: int
    images_per_request: int


def load_test_images(count: int, data_dir: Path | None = None) -> np.ndarray:
    """The first ``count`` Fashion-MNIST test images as uint8 ``(count, 28, 28)``."""
    images = read_idx(resolve_data_dir(data_dir) / TEST_IMAGES)
    return np.ascontiguousarray(images[:count])


def tfserving_json(image: np.ndarray) -> bytes:
    """``{"instances": [28×28×1 floats]}`` as a typical client writes it (``tolist()`` of float32)."""
    return json.dumps({"instances": to_model_input(image[np.newaxis]).tolist()}).encode()


def tfserving_batch_json(images: np.ndarray) -> bytes:
    """``{"instances": [...]}`` with several images, one row each."""
    return json.dumps({"instances": to_model_input(images).tolist()}).encode()


def png(image: np.ndarray) -> bytes:
    """One grayscale PNG file."""
    encoded = io.BytesIO()
    Image.fromarray(image, mode="L").save(encoded, format="PNG")
    return encoded.getvalue()


def png_multipart(image: np.ndarray) -> bytes:
    """One grayscale PNG as the multipart form field ``files``."""
    return b"".join(
        [
            f"--{MULTIPART_BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="files"; filename="image.png"\r\n',
            b"Content-Type: image/png\r\n\r\n",
            png(image),
            f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode(),
        ]
    )


def v2_json(images: np.ndarray) -> bytes:
    """An Open Inference Protocol v2 JSON request, the FP32 batch as flat ``data`` (as tritonclient and
    MLServer's clients write it)."""
    batch = to_model_input(images)
    tensor = {"name": "images", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary(images: np.ndarray, binary_output: bool = True) -> tuple[bytes, int]:
    """An Open Inference Protocol v2 request with the batch as a binary FP32 tensor; the output asked as
    binary too, or (``binary_output=False``) as JSON.

    Returns the body and the length of its JSON header (``Inference-Header-Content-Length``).
    """
    tensor = np.ascontiguousarray(to_model_input(images), dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "images",
                "shape": [len(images), 28, 28, 1],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": binary_output}}],
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return header_bytes + tensor, len(header_bytes)


def _write(directory: Path, bodies: list[tuple[bytes, dict[str, str]]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index, (body, headers) in enumerate(bodies):
        (directory / f"body-{index}").write_bytes(body)
        (directory / f"body-{index}.headers").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))


def _v2_binary_body(images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    body, header_length = v2_binary(images)
    return body, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)}


def build_payloads(root: Path, *, bodies: int = 16, batch: int = 64, batch_bodies: int = 4) -> dict[str, Payload]:
    """Write every scenario's bodies under ``root``; returns them by name.

    One image per body: ``tfserving`` (TF Serving JSON rows), ``png`` (native multipart), ``png_raw`` (the
    PNG file as the body), ``v2_json``, ``v2_binary``. ``batch`` images per body: ``v2_batch`` (binary),
    ``v2_json_batch``, ``tfserving_batch``.

    Also saves the single images as ``root/images.npy`` (uint8) so servers' answers can be checked, and
    the batches' images as ``root/batch_images.npy`` (the gRPC load builds its calls from them).
    """
    images = load_test_images(max(bodies, batch * batch_bodies))
    np.save(root / "images.npy", images[:bodies])
    np.save(root / "batch_images.npy", images[: batch * batch_bodies])
    json_headers = {"Content-Type": "application/json"}
    _write(root / "tfserving", [(tfserving_json(image), json_headers) for image in images[:bodies]])
    multipart = {"Content-Type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"}
    _write(root / "png", [(png_multipart(image), multipart) for image in images[:bodies]])
    _write(root / "png_raw", [(png(image), {"Content-Type": "image/png"}) for image in images[:bodies]])
    _write(root / "v2_json", [(v2_json(image[np.newaxis]), json_headers) for image in images[:bodies]])
    _write(root / "v2_binary", [_v2_binary_body(image[np.newaxis]) for image in images[:bodies]])
    batches = [images[index * batch : (index + 1) * batch] for index in range(batch_bodies)]
    _write(root / "v2_batch", [_v2_binary_body(images) for images in batches])
    _write(root / "v2_json_batch", [(v2_json(images), json_headers) for images in batches])
    _write(root / "tfserving_batch", [(tfserving_batch_json(images), json_headers) for images in batches])
    singles = ("tfserving", "png", "png_raw", "v2_json", "v2_binary")
    return {
        **{name: Payload(name, root / name, bodies, 1) for name in singles},
        **{name: Payload(name, root / name, batch_bodies, batch) for name in ("v2_batch", "v2_json_batch",
                                                                              "tfserving_batch")},
    }  # fmt: skip
