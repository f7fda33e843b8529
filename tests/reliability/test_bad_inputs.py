"""A corpus of bad requests over the three APIs: each gets its 4xx with a JSON ``{"error": ...}`` body,
and the server still answers a valid request of the same API right after it.

Groups: broken image files (truncated, random, bombs, 0×0, unsupported formats) through every
image-accepting encoding; bad tensors (shape, rank, dtype, NaN/inf, range, empty, too many) through
every tensor encoding; malformed JSON; bodies over ``CNN_MAX_REQUEST_BYTES``; protocol mistakes
specific to each API; unknown models, versions and layers; and path tricks (``..``, encoded ``/``).
"""

from __future__ import annotations

import functools
import http.client
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from . import payloads as p
from .servers import HOST, ServerProcess

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # the service's default CNN_MAX_REQUEST_BYTES


@dataclass(frozen=True)
class Bad:
    """A bad request, the status it must get, and which API's valid request to send after it."""

    build: Callable[[], p.Call]
    status: int
    api: str


VALID = {
    "native": lambda: p.native_tensor(p.valid_batch(1)),
    "tfserving": lambda: p.tfserving_instances(p.valid_batch(1)),
    "v2": lambda: p.v2_json(p.valid_batch(1)),
}


def _case(cases: dict[str, pytest.ParameterSet], name: str, bad: Bad) -> None:
    cases[name] = pytest.param(bad, id=name)


# -- image files ----------------------------------------------------------------------------------------
@functools.cache
def _bilevel_bomb() -> bytes:
    return p.bilevel_png(20_000)


def _lab_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("LAB", (28, 28)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _forged_gif(width: int, height: int) -> bytes:
    gif = bytearray(p.encode(p.garment(), "GIF"))
    gif[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")  # logical screen size
    return bytes(gif)


BAD_IMAGES: dict[str, tuple[Callable[[], bytes], int]] = {
    "truncated-png": (lambda: p.encode(p.garment())[:-40], 400),
    "png-header-only": (lambda: p.encode(p.garment())[:33], 400),
    "truncated-jpeg": (lambda: p.encode(p.garment(), "JPEG")[:300], 400),
    "random-bytes": (lambda: np.random.default_rng(7).bytes(4096), 400),
    "empty-file": (lambda: b"", 400),
    "text-file": (lambda: b"this is not an image\n", 400),
    "svg-file": (lambda: b"<svg xmlns='http://www.w3.org/2000/svg' width='28' height='28'/>", 400),
    "unsupported-ppm": (lambda: p.encode(p.garment(), "PPM"), 400),
    "png-0x0": (lambda: p.forged_png(0, 0), 400),
    "png-0x28": (lambda: p.forged_png(0, 28), 400),
    "png-zTXt-bomb": (p.text_bomb_png, 400),
    "png-over-pixel-limit-8000x8000": (lambda: p.forged_png(8000, 8000), 413),
    "png-forged-20000x20000": (lambda: p.forged_png(20_000, 20_000), 413),
    "png-bilevel-bomb-20000x20000": (_bilevel_bomb, 413),
    "gif-forged-65535x65535": (lambda: _forged_gif(65535, 65535), 413),
    "tiff-lab-mode": (_lab_tiff, 400),
}
IMAGE_API = {
    "native-files": "native",
    "native-raw": "native",
    "native-b64": "native",
    "feature-maps-file": "native",
    "tfserving-b64": "tfserving",
    "v2-bytes-json": "v2",
    "v2-bytes-binary": "v2",
}


def _image_cases() -> dict[str, pytest.ParameterSet]:
    cases: dict[str, pytest.ParameterSet] = {}
    for image, (blob, status) in BAD_IMAGES.items():
        for encoding, encode in p.IMAGE_ENCODINGS.items():
            bad = Bad(lambda encode=encode, blob=blob: encode(blob()), status, IMAGE_API[encoding])
            _case(cases, f"{image}@{encoding}", bad)
    return cases


# -- tensors ----------------------------------------------------------------------------------------
def _with(value: float) -> np.ndarray:
    """A valid one-image batch with ``value`` at its centre pixel."""
    batch = p.valid_batch(1)
    batch[0, 14, 14, 0] = value
    return batch


BAD_TENSORS: dict[str, tuple[Callable[[], np.ndarray], int]] = {
    "rank2-1x3": (lambda: np.zeros((1, 3), np.float32), 400),
    "no-batch-axis-28x28": (lambda: np.zeros((28, 28), np.float32), 400),
    "rank5": (lambda: np.zeros((1, 1, 28, 28, 1), np.float32), 400),
    "three-channels": (lambda: np.zeros((1, 28, 28, 3), np.float32), 400),
    "wrong-size-32x32": (lambda: np.zeros((1, 32, 32, 1), np.float32), 400),
    "empty-batch": (lambda: np.zeros((0, 28, 28, 1), np.float32), 400),
    "nan": (lambda: _with(np.nan), 400),
    "inf": (lambda: _with(np.inf), 400),
    "minus-inf": (lambda: _with(-np.inf), 400),
    "above-one": (lambda: _with(2.0), 400),
    "negative": (lambda: _with(-0.5), 400),
    "too-many-images-257": (lambda: np.zeros((257, 28, 28, 1), np.uint8), 413),
}
TENSOR_ENCODINGS: dict[str, tuple[Callable[[np.ndarray], p.Call], str]] = {
    "native-tensor": (p.native_tensor, "native"),
    "tfserving-instances": (p.tfserving_instances, "tfserving"),
    "tfserving-inputs": (p.tfserving_inputs, "tfserving"),
    "v2-json-fp32": (p.v2_json, "v2"),
    "v2-binary-fp32": (p.v2_binary, "v2"),
}


def _tensor_cases() -> dict[str, pytest.ParameterSet]:
    cases: dict[str, pytest.ParameterSet] = {}
    for tensor, (array, status) in BAD_TENSORS.items():
        for encoding, (encode, api) in TENSOR_ENCODINGS.items():
            _case(cases, f"{tensor}@{encoding}", Bad(lambda encode=encode, array=array: encode(array()), status, api))
    zeros = np.zeros((1, 28, 28, 1)).tolist()
    v2_zeros = [0.0] * 784
    image_shape = [1, 28, 28, 1]
    big = 2**63 - 1
    for name, build, api in [
        # Wrong dtypes, and values the dtype cannot hold.
        ("native-dtype-int64", lambda: p.native_tensor(zeros, dtype="int64"), "native"),
        ("native-uint8-fraction", lambda: p.native_tensor(np.full((1, 28, 28, 1), 1.5), dtype="uint8"), "native"),
        ("native-uint8-256", lambda: p.native_tensor(np.full((1, 28, 28, 1), 256), dtype="uint8"), "native"),
        ("native-uint8-negative", lambda: p.native_tensor(np.full((1, 28, 28, 1), -1), dtype="uint8"), "native"),
        ("native-booleans", lambda: p.native_tensor(np.ones((1, 28, 28, 1), bool)), "native"),
        ("tfserving-booleans", lambda: p.tfserving_instances(np.ones((1, 28, 28, 1), bool)), "tfserving"),
        ("v2-fp32-booleans", lambda: p.v2_request([p.v2_input(image_shape, "FP32", [True] * 784)]), "v2"),
        ("native-strings", lambda: p.native_tensor([[["a"] * 28] * 28]), "native"),
        ("native-ragged", lambda: p.native_tensor([[[0.0] * 28] * 27 + [[0.0] * 3]]), "native"),
        ("native-not-a-list", lambda: p.json_call(p.native_path(), {"tensor": 0.5}), "native"),
        ("native-ints-over-int64", lambda: p.native_tensor([[[10**30] * 28] * 28]), "native"),
        ("native-images-and-tensor", lambda: p.json_call(p.native_path(), {"images": [], "tensor": zeros}), "native"),
        ("native-empty-images", lambda: p.native_b64([]), "native"),
        ("native-images-not-base64", lambda: p.json_call(p.native_path(), {"images": ["%%%"]}), "native"),
        ("native-unknown-key", lambda: p.json_call(p.native_path(), {"tensor": zeros, "extra": 1}), "native"),
        ("feature-maps-batch-of-two", lambda: p.feature_maps_tensor(np.zeros((2, 28, 28, 1))), "native"),
        ("tfserving-strings", lambda: p.tfserving_instances([[["a"] * 28] * 28]), "tfserving"),
        ("tfserving-ragged", lambda: p.tfserving_instances([[[0.0] * 28] * 27 + [[0.0] * 3]]), "tfserving"),
        ("tfserving-scalar", lambda: p.tfserving_inputs(0.5), "tfserving"),
        ("tfserving-numeric-strings", lambda: p.tfserving_instances([[["0.5"] * 28] * 28]), "tfserving"),
        ("v2-int64", lambda: p.v2_request([p.v2_input(image_shape, "INT64", v2_zeros)]), "v2"),
        ("v2-fp16", lambda: p.v2_request([p.v2_input(image_shape, "FP16", v2_zeros)]), "v2"),
        ("v2-bool", lambda: p.v2_request([p.v2_input(image_shape, "BOOL", [False] * 784)]), "v2"),
        ("v2-bytes-numbers", lambda: p.v2_request([p.v2_input([1], "BYTES", [1])]), "v2"),
        ("v2-uint8-fraction", lambda: p.v2_request([p.v2_input(image_shape, "UINT8", [1.5] * 784)]), "v2"),
        ("v2-uint8-256", lambda: p.v2_request([p.v2_input(image_shape, "UINT8", [256] * 784)]), "v2"),
        ("v2-strings", lambda: p.v2_request([p.v2_input(image_shape, "FP32", ["a"] * 784)]), "v2"),
        ("v2-scalar-shape", lambda: p.v2_request([p.v2_input([], "FP32", [0.5])]), "v2"),
        ("v2-shape-data-mismatch", lambda: p.v2_request([p.v2_input(image_shape, "FP32", [0.5] * 783)]), "v2"),
        ("v2-negative-dimension", lambda: p.v2_request([p.v2_input([-1, 28, 28, 1], "FP32", v2_zeros)]), "v2"),
        ("v2-shape-product-overflows-int64",
         lambda: p.v2_request([p.v2_input([big, big], "FP32", [0.5])]), "v2"),
        ("v2-dimension-over-int64", lambda: p.v2_request([p.v2_input([2**64], "FP32", [0.5])]), "v2"),
        ("v2-rank-65", lambda: p.v2_request([p.v2_input([1] * 65, "FP32", [0.5])]), "v2"),
        ("v2-huge-dimension-times-zero", lambda: p.v2_request([p.v2_input([2**40, 0], "FP32", [])]), "v2"),
        ("v2-binary-shape-product-overflows-int64",
         lambda: p.v2_binary_call({"inputs": [p.v2_input([big, big], "FP32", binary_data_size=4)]}, b"\0" * 4),
         "v2"),
    ]:  # fmt: skip
        _case(cases, name, Bad(build, 400, api))
    return cases


# -- malformed JSON, on every JSON endpoint ---------------------------------------------------------
JSON_ENDPOINTS = {
    "native": (p.native_path(), "native"),
    "feature-maps": (p.native_path(endpoint="feature-maps"), "native"),
    "tfserving": (p.tfserving_path(), "tfserving"),
    "v2": (p.v2_path(), "v2"),
}
MALFORMED_JSON: dict[str, bytes] = {
    "truncated": b'{"tensor": [[[0.5',
    "not-utf8": b"\xff\xfe\xfa{}",
    "empty-body": b"",
    "trailing-garbage": b"{} x",
    "null": b"null",
    "array": b"[1, 2, 3]",
    "string": b'"text"',
    "number": b"42",
    "nesting-100000-deep": b"[" * 100_000 + b"]" * 100_000,
    "integer-of-5000-digits": b'{"instances": [' + b"7" * 5000 + b"]}",
}


def _json_cases() -> dict[str, pytest.ParameterSet]:
    cases: dict[str, pytest.ParameterSet] = {}
    for body_name, body in MALFORMED_JSON.items():
        for endpoint, (path, api) in JSON_ENDPOINTS.items():
            call = p.Call("POST", path, body, {"content-type": "application/json"})
            _case(cases, f"{body_name}@{endpoint}", Bad(lambda call=call: call, 400, api))
    return cases


# -- bodies over the size limit -------------------------------------------------------------------------
@functools.cache
def _oversized_tensor_json() -> bytes:
    """A syntactically valid JSON tensor just over the limit (a 413 must not depend on parsing it)."""
    zeros = (MAX_REQUEST_BYTES // 2 + 1024) - 1
    return b'{"tensor": [' + b"0," * zeros + b"0]}"


def _oversized(path: str, content_type: str, key: bytes = b"tensor") -> p.Call:
    return p.Call("POST", path, _oversized_tensor_json().replace(b"tensor", key, 1), {"content-type": content_type})


def _oversized_cases() -> dict[str, pytest.ParameterSet]:
    cases: dict[str, pytest.ParameterSet] = {}
    for name, build, api in [
        ("native-json", lambda: _oversized(p.native_path(), "application/json"), "native"),
        ("native-raw-image", lambda: _oversized(p.native_path(), "image/png"), "native"),
        ("native-multipart", lambda: p.native_files([_oversized_tensor_json()]), "native"),
        ("feature-maps-multipart", lambda: p.feature_maps_file(_oversized_tensor_json()), "native"),
        ("tfserving-json", lambda: _oversized(p.tfserving_path(), "application/json", b"instances"), "tfserving"),
        ("v2-json", lambda: _oversized(p.v2_path(), "application/json", b"inputs"), "v2"),
        ("v2-binary", lambda: p.v2_binary_call({"inputs": []}, _oversized_tensor_json()), "v2"),
    ]:
        _case(cases, f"over-max-request-bytes@{name}", Bad(build, 413, api))
    return cases


# -- protocol mistakes specific to one API -------------------------------------------------------------
def _protocol_cases() -> dict[str, pytest.ParameterSet]:
    image = p.encode(p.garment())
    batch = p.valid_batch(1)
    rows = batch.tolist()
    b64 = p.tfserving_b64([image])
    b64_instance = json.loads(b64.content)["instances"][0]
    fp32 = batch.astype("<f4").tobytes()
    v2_image = p.v2_input([1, 28, 28, 1], "FP32", binary_data_size=len(fp32))
    cases: dict[str, pytest.ParameterSet] = {}
    for name, build, status, api in [
        ("native-unsupported-content-type", lambda: p.native_raw(b"<x/>", "application/xml"), 415, "native"),
        ("native-multipart-without-files", lambda: p.native_form_field_only(), 400, "native"),
        ("native-multipart-without-boundary",
         lambda: p.Call("POST", p.native_path(), b"--x--", {"content-type": "multipart/form-data"}), 400, "native"),
        ("native-top-k-zero", lambda: p.Call("POST", p.native_path() + "?top_k=0", image, {"content-type": "image/png"}),
         422, "native"),
        ("native-unknown-polarity",
         lambda: p.Call("POST", p.native_path() + "?polarity=sideways", image, {"content-type": "image/png"}), 422, "native"),
        ("feature-maps-two-files",
         lambda: p._encoded("POST", p.native_path(endpoint="feature-maps"),
                            files=[("file", ("a.png", image, "image/png")), ("file", ("b.png", image, "image/png"))]),
         400, "native"),
        ("feature-maps-png-without-layer", lambda: p.feature_maps_file(image, query="format=png"), 400, "native"),
        ("feature-maps-unknown-format", lambda: p.feature_maps_file(image, query="layer=conv1&format=gif"), 422, "native"),
        ("tfserving-instances-and-inputs",
         lambda: p.json_call(p.tfserving_path(), {"instances": rows, "inputs": rows}), 400, "tfserving"),
        ("tfserving-neither-instances-nor-inputs",
         lambda: p.json_call(p.tfserving_path(), {"signature_name": "serving_default"}), 400, "tfserving"),
        ("tfserving-unknown-key", lambda: p.json_call(p.tfserving_path(), {"instances": rows, "x": 1}), 400, "tfserving"),
        ("tfserving-unknown-signature",
         lambda: p.json_call(p.tfserving_path(), {"signature_name": "nope", "instances": rows}), 400, "tfserving"),
        ("tfserving-b64-mixed-with-tensor",
         lambda: p.json_call(p.tfserving_path(), {"instances": [b64_instance, rows[0]]}), 400, "tfserving"),
        ("tfserving-unknown-input-name",
         lambda: p.json_call(p.tfserving_path(), {"inputs": {"pixels": rows}}), 400, "tfserving"),
        ("tfserving-bad-b64", lambda: p.json_call(p.tfserving_path(), {"instances": [{"b64": "%%"}]}), 400, "tfserving"),
        ("v2-no-inputs", lambda: p.v2_request([]), 400, "v2"),
        ("v2-two-inputs", lambda: p.v2_request([p.v2_input([1], "BYTES", ["YQ=="])] * 2), 400, "v2"),
        ("v2-unknown-input", lambda: p.v2_request([{**p.v2_input([1], "BYTES", ["YQ=="]), "name": "x"}]), 400, "v2"),
        ("v2-unknown-output",
         lambda: p.v2_request([p.v2_input([1, 28, 28, 1], "FP32", batch.reshape(-1).tolist())], outputs=[{"name": "x"}]),
         400, "v2"),
        ("v2-input-without-data", lambda: p.v2_request([p.v2_input([1, 28, 28, 1], "FP32")]), 400, "v2"),
        ("v2-bytes-not-base64", lambda: p.v2_request([p.v2_input([1], "BYTES", ["%%"])]), 400, "v2"),
        ("v2-bytes-count-mismatch", lambda: p.v2_request([p.v2_input([3], "BYTES", ["YQ=="])]), 400, "v2"),
        ("v2-header-length-not-a-number", lambda: p.v2_binary_call({"inputs": [v2_image]}, fp32, header_length="abc"),
         400, "v2"),
        ("v2-header-length-zero", lambda: p.v2_binary_call({"inputs": [v2_image]}, fp32, header_length="0"), 400, "v2"),
        ("v2-header-length-past-body",
         lambda: p.v2_binary_call({"inputs": [v2_image]}, fp32, header_length="999999"), 400, "v2"),
        ("v2-binary-size-past-body", lambda: p.v2_binary_call({"inputs": [v2_image]}, fp32[:-4]), 400, "v2"),
        ("v2-binary-size-wrong-for-shape",
         lambda: p.v2_binary_call({"inputs": [p.v2_input([1, 28, 28, 1], "FP32", binary_data_size=8)]}, fp32[:8]),
         400, "v2"),
        ("v2-binary-bytes-truncated-prefix",
         lambda: p.v2_binary_call({"inputs": [p.v2_input([1], "BYTES", binary_data_size=2)]}, b"\x05\x00"), 400, "v2"),
        ("v2-binary-bytes-truncated-element",
         lambda: p.v2_binary_call({"inputs": [p.v2_input([1], "BYTES", binary_data_size=6)]}, b"\x09\x00\x00\x00ab"),
         400, "v2"),
        ("v2-binary-nan", lambda: p.v2_binary(_with(np.nan)), 400, "v2"),
    ]:  # fmt: skip
        _case(cases, name, Bad(build, status, api))
    return cases


# -- unknown models, versions and layers ------------------------------------------------------------
def _unknown_cases() -> dict[str, pytest.ParameterSet]:
    tensor = p.valid_batch(1)
    cases: dict[str, pytest.ParameterSet] = {}
    for name, build, status, api in [
        ("native-predict-unknown-model", lambda: p.native_tensor(tensor, model="no_such_model"), 404, "native"),
        ("native-predict-unknown-version", lambda: p.native_tensor(tensor, version=99), 404, "native"),
        ("native-predict-version-not-a-number",
         lambda: p.json_call(p.native_path(version="abc"), {"tensor": tensor.tolist()}), 400, "native"),
        ("native-detail-unknown-model", lambda: p.Call("GET", "/api/v1/models/no_such_model"), 404, "native"),
        ("native-detail-unknown-version", lambda: p.Call("GET", "/api/v1/models/fashion_cnn/versions/99"), 404, "native"),
        ("native-summary-unknown-model", lambda: p.Call("GET", "/api/v1/models/no_such_model/summary"), 404, "native"),
        ("feature-maps-unknown-layer", lambda: p.feature_maps_tensor(tensor[0], query="layer=no_such_layer"), 404, "native"),
        ("feature-maps-unknown-model", lambda: p.feature_maps_tensor(tensor[0], model="no_such_model"), 404, "native"),
        ("tfserving-predict-unknown-model", lambda: p.tfserving_instances(tensor, model="no_such_model"), 404, "tfserving"),
        ("tfserving-predict-unknown-version", lambda: p.tfserving_instances(tensor, version=99), 404, "tfserving"),
        ("tfserving-predict-version-not-a-number", lambda: p.tfserving_instances(tensor, version="abc"), 400, "tfserving"),
        ("tfserving-status-unknown-model", lambda: p.Call("GET", "/v1/models/no_such_model"), 404, "tfserving"),
        ("tfserving-status-unknown-version", lambda: p.Call("GET", "/v1/models/fashion_cnn/versions/99"), 404, "tfserving"),
        ("tfserving-metadata-unknown-model", lambda: p.Call("GET", "/v1/models/no_such_model/metadata"), 404, "tfserving"),
        ("v2-infer-unknown-model", lambda: p.v2_json(tensor, model="no_such_model"), 404, "v2"),
        ("v2-infer-unknown-version", lambda: p.v2_json(tensor, version=99), 404, "v2"),
        ("v2-infer-version-not-a-number",
         lambda: p.json_call(p.v2_path(version="abc"), {"inputs": [p.v2_input([1], "BYTES", ["YQ=="])]}), 400, "v2"),
        ("v2-metadata-unknown-model", lambda: p.Call("GET", "/v2/models/no_such_model"), 404, "v2"),
        ("v2-ready-unknown-model", lambda: p.Call("GET", "/v2/models/no_such_model/ready"), 404, "v2"),
        ("v2-ready-unknown-version", lambda: p.Call("GET", "/v2/models/fashion_cnn/versions/99/ready"), 404, "v2"),
        ("unknown-route", lambda: p.Call("GET", "/api/v2/everything"), 404, "native"),
        ("wrong-method", lambda: p.Call("GET", p.native_path()), 405, "native"),
    ]:  # fmt: skip
        _case(cases, name, Bad(build, status, api))
    return cases


CASES = {
    **_image_cases(),
    **_tensor_cases(),
    **_json_cases(),
    **_oversized_cases(),
    **_protocol_cases(),
    **_unknown_cases(),
}


def _assert_json_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


@pytest.mark.parametrize("bad", list(CASES.values()))
def test_bad_request_gets_a_json_4xx(bad: Bad, http: httpx.Client) -> None:
    _assert_json_error(bad.build().send(http), bad.status)
    assert VALID[bad.api]().send(http).status_code == 200


def test_oversized_chunked_body_is_refused(http: httpx.Client) -> None:
    """Without Content-Length the limit is enforced while the body streams in."""

    def chunks() -> Iterator[bytes]:
        body = _oversized_tensor_json()
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    response = http.post(p.native_path(), content=chunks(), headers={"content-type": "application/json"})
    _assert_json_error(response, 413)
    assert VALID["native"]().send(http).status_code == 200


# -- path tricks, sent byte for byte (no client-side normalisation of "..") ----------------------------
TRICKY_PATHS = [
    ("GET", "/api/v1/models/../summary"),
    ("GET", "/api/v1/models/%2E%2E/summary"),
    ("GET", "/api/v1/models/../../../etc/passwd"),
    ("GET", "/api/v1/models/..%2F..%2Fetc%2Fpasswd/summary"),
    ("GET", "/api/v1/models/fashion_cnn%2F..%2Ffashion_cnn/summary"),
    ("GET", "/api/v1/models/fashion_cnn/versions/..%2F1"),
    ("GET", "/api/v1/models/%00/summary"),
    ("GET", "/api/v1/models/" + "a" * 4000),
    ("POST", "/api/v1/models/../predict"),
    ("POST", "/api/v1/models/fashion_cnn%2F..%2F..%2Fpredict"),
    ("POST", "/v1/models/..:predict"),
    ("GET", "/v1/models/%2E%2E%2F%2E%2E/metadata"),
    ("GET", "/v1/models/fashion_cnn%2F..%2F..%2Fetc"),
    ("GET", "/v2/models/../ready"),
    ("POST", "/v2/models/..%2F/infer"),
    ("GET", "/v2/models/fashion_cnn/versions/..%2F1/ready"),
]


@pytest.mark.parametrize(("method", "path"), TRICKY_PATHS, ids=[f"{m} {u[:60]}" for m, u in TRICKY_PATHS])
def test_model_names_with_dots_and_slashes_are_not_found(method: str, path: str, served: ServerProcess) -> None:
    connection = http.client.HTTPConnection(HOST, served.port, timeout=30)
    try:
        body = json.dumps({"tensor": p.valid_batch(1).tolist()}).encode() if method == "POST" else None
        connection.request(method, path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        status, content_type, payload = response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()
    assert status == 404, payload[:300]
    assert content_type.startswith("application/json")
    assert json.loads(payload)["error"]


# -- legal images, however small ---------------------------------------------------------------------
SMALL_IMAGES = {
    "1x1-white": lambda: p.encode(np.full((1, 1), 255, np.uint8)),
    "1x1-black-jpeg": lambda: p.encode(np.zeros((1, 1), np.uint8), "JPEG"),
    "1x300-strip": lambda: p.encode(np.full((1, 300), 128, np.uint8)),
    "2x2-rgba-transparent": lambda: p.encode(np.zeros((2, 2, 4), np.uint8)),
    "3x5-16bit": lambda: p.encode(np.arange(15, dtype=np.uint16).reshape(3, 5) * 4000),
}


@pytest.mark.parametrize("encoding", list(p.IMAGE_ENCODINGS))
@pytest.mark.parametrize("image", list(SMALL_IMAGES))
def test_tiny_images_are_legal_and_classified(image: str, encoding: str, http: httpx.Client) -> None:
    """A 1×1 image is a valid image: it is scaled up to the model's 28×28 input and answered with 200."""
    response = p.IMAGE_ENCODINGS[encoding](SMALL_IMAGES[image]()).send(http)
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    if encoding.startswith("native-"):
        probabilities = body["predictions"][0]["probabilities"]
    elif encoding == "feature-maps-file":
        probabilities = None
        assert body["layers"][0]["shape"][:2] == [28, 28]
    elif encoding.startswith("tfserving"):
        probabilities = body["predictions"][0]
    else:
        probabilities = body["outputs"][0]["data"]
    if probabilities is not None:
        assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-3
