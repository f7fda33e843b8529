"""Images and request bodies for the three APIs, as ready-to-send :class:`Call` objects.

Every builder returns the exact bytes and headers, so the same call works with a sync or an async
httpx client, and malformed bodies (NaN literals, forged headers) are sent as they are.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

MODEL = "fashion_cnn"
SIDE = 28


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def send(self, client: httpx.Client) -> httpx.Response:
        return client.request(self.method, self.path, content=self.content, headers=self.headers)

    async def asend(self, client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(self.method, self.path, content=self.content, headers=self.headers)


def _encoded(method: str, path: str, **kwargs: Any) -> Call:
    """Let httpx encode ``json=`` or ``files=`` and keep the resulting bytes and content type."""
    request = httpx.Request(method, f"http://server{path}", **kwargs)
    return Call(method, path, request.read(), {"content-type": request.headers["content-type"]})


def json_call(path: str, payload: Any, method: str = "POST") -> Call:
    """``payload`` as JSON; floats NaN/inf become the ``NaN``/``Infinity`` literals Python's json accepts."""
    return Call(method, path, json.dumps(payload).encode(), {"content-type": "application/json"})


# -- images ------------------------------------------------------------------------------------------
def garment(side: int = SIDE) -> np.ndarray:
    """A light T-shirt-like shape on black, like a Fashion-MNIST image (uint8, side × side)."""
    image = np.zeros((side, side), np.uint8)
    s = side / SIDE
    image[int(6 * s) : int(24 * s), int(8 * s) : int(20 * s)] = 200
    image[int(6 * s) : int(11 * s), int(3 * s) : int(25 * s)] = 180
    return image


def encode(array: np.ndarray, image_format: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format=image_format)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int, *extra_chunks: bytes) -> bytes:
    """A PNG whose header claims ``width × height`` 8-bit gray pixels, followed by one tiny IDAT."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    pixels = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra_chunks) + pixels + _png_chunk(b"IEND", b"")


def text_bomb_png() -> bytes:
    """A valid 28×28 PNG with a zTXt chunk inflating to 8 MiB."""
    bomb = _png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"a" * (8 << 20), 9))
    image = encode(garment())
    end_of_header = 8 + 25  # signature + IHDR chunk
    return image[:end_of_header] + bomb + image[end_of_header:]


def bilevel_png(side: int) -> bytes:
    """A real, complete 1-bit PNG of side × side pixels: a few KB that decode to side² bytes."""
    buffer = io.BytesIO()
    Image.new("1", (side, side), 0).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# -- native API (/api/v1) -------------------------------------------------------------------------------
def native_path(model: str = MODEL, endpoint: str = "predict", version: int | str | None = None) -> str:
    versioned = f"/versions/{version}" if version is not None else ""
    return f"/api/v1/models/{model}{versioned}/{endpoint}"


def native_files(blobs: list[bytes], model: str = MODEL) -> Call:
    files = [("files", (f"image{i}.png", blob, "image/png")) for i, blob in enumerate(blobs)]
    return _encoded("POST", native_path(model), files=files)


def native_form_field_only(model: str = MODEL) -> Call:
    """A multipart body with a plain form field and no file part."""
    body = b'--b0undary\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b0undary--\r\n'
    return Call("POST", native_path(model), body, {"content-type": "multipart/form-data; boundary=b0undary"})


def native_raw(blob: bytes, content_type: str = "image/png", model: str = MODEL) -> Call:
    return Call("POST", native_path(model), blob, {"content-type": content_type})


def native_b64(blobs: list[bytes], model: str = MODEL) -> Call:
    return json_call(native_path(model), {"images": [base64.b64encode(b).decode() for b in blobs]})


def native_tensor(tensor: Any, dtype: str | None = None, model: str = MODEL, version: int | None = None) -> Call:
    payload = {"tensor": np.asarray(tensor).tolist() if isinstance(tensor, np.ndarray) else tensor}
    if dtype is not None:
        payload["dtype"] = dtype
    return json_call(native_path(model, version=version), payload)


def feature_maps_file(blob: bytes, query: str = "layer=conv1", model: str = MODEL) -> Call:
    path = native_path(model, "feature-maps") + (f"?{query}" if query else "")
    return _encoded("POST", path, files={"file": ("image.png", blob, "image/png")})


def feature_maps_tensor(image: Any, query: str = "layer=conv1", model: str = MODEL) -> Call:
    """One image as a tensor (28×28 or 28×28×1)."""
    path = native_path(model, "feature-maps") + (f"?{query}" if query else "")
    return json_call(path, {"tensor": np.asarray(image).tolist()})


# -- TensorFlow Serving REST (/v1) ----------------------------------------------------------------------
def tfserving_path(model: str = MODEL, version: int | str | None = None, verb: str = ":predict") -> str:
    versioned = f"/versions/{version}" if version is not None else ""
    return f"/v1/models/{model}{versioned}{verb}"


def tfserving_b64(blobs: list[bytes], model: str = MODEL) -> Call:
    return json_call(tfserving_path(model), {"instances": [{"b64": base64.b64encode(b).decode()} for b in blobs]})


def tfserving_instances(tensor: Any, model: str = MODEL, version: int | str | None = None) -> Call:
    rows = np.asarray(tensor).tolist() if isinstance(tensor, np.ndarray) else tensor
    return json_call(tfserving_path(model, version), {"instances": rows})


def tfserving_inputs(tensor: Any, model: str = MODEL) -> Call:
    values = np.asarray(tensor).tolist() if isinstance(tensor, np.ndarray) else tensor
    return json_call(tfserving_path(model), {"inputs": values})


# -- Open Inference Protocol v2 (/v2) ----------------------------------------------------------------
def v2_path(model: str = MODEL, version: int | str | None = None, endpoint: str = "infer") -> str:
    versioned = f"/versions/{version}" if version is not None else ""
    return f"/v2/models/{model}{versioned}/{endpoint}"


def v2_input(shape: list[int], datatype: str, data: Any = None, **parameters: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "images", "shape": shape, "datatype": datatype}
    if data is not None:
        entry["data"] = data
    if parameters:
        entry["parameters"] = parameters
    return entry


def v2_json(tensor: np.ndarray, datatype: str = "FP32", model: str = MODEL, version: int | None = None) -> Call:
    data = tensor.reshape(-1).tolist()
    return json_call(v2_path(model, version), {"inputs": [v2_input(list(tensor.shape), datatype, data)]})


def v2_request(inputs: list[dict[str, Any]], model: str = MODEL, **extra: Any) -> Call:
    return json_call(v2_path(model), {"inputs": inputs, **extra})


def v2_binary_call(header: dict[str, Any], binary: bytes, model: str = MODEL, header_length: str | None = None) -> Call:
    head = json.dumps(header).encode()
    length = header_length if header_length is not None else str(len(head))
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": length}
    return Call("POST", v2_path(model), head + binary, headers)


def v2_binary(tensor: np.ndarray, datatype: str = "FP32", model: str = MODEL) -> Call:
    dtype = {"FP32": "<f4", "FP64": "<f8", "UINT8": "u1"}[datatype]
    raw = np.ascontiguousarray(tensor, dtype=dtype).tobytes()
    inputs = [v2_input(list(tensor.shape), datatype, binary_data_size=len(raw))]
    return v2_binary_call({"inputs": inputs}, raw, model)


def v2_bytes_json(blobs: list[bytes], model: str = MODEL) -> Call:
    data = [base64.b64encode(b).decode() for b in blobs]
    return v2_request([v2_input([len(blobs)], "BYTES", data)], model)


def length_prefixed(blobs: list[bytes]) -> bytes:
    """Triton's BYTES serialization: 4-byte little-endian length, then the bytes, per element."""
    return b"".join(struct.pack("<I", len(b)) + b for b in blobs)


def v2_bytes_binary(blobs: list[bytes], model: str = MODEL) -> Call:
    raw = length_prefixed(blobs)
    return v2_binary_call({"inputs": [v2_input([len(blobs)], "BYTES", binary_data_size=len(raw))]}, raw, model)


IMAGE_ENCODINGS = {
    "native-files": lambda blob: native_files([blob]),
    "native-raw": lambda blob: native_raw(blob),
    "native-b64": lambda blob: native_b64([blob]),
    "feature-maps-file": lambda blob: feature_maps_file(blob),
    "tfserving-b64": lambda blob: tfserving_b64([blob]),
    "v2-bytes-json": lambda blob: v2_bytes_json([blob]),
    "v2-bytes-binary": lambda blob: v2_bytes_binary([blob]),
}
"""One encoded image file sent through each API that accepts image files."""


def valid_batch(count: int = 1, seed: int = 0) -> np.ndarray:
    """``count`` float32 images in [0, 1], shaped (count, 28, 28, 1)."""
    return np.random.default_rng(seed).random((count, SIDE, SIDE, 1), dtype=np.float32)
