"""Functional checks against a running service, with real Fashion-MNIST test images.

    python docker/smoke_check.py --url http://127.0.0.1:8000 [--grpc 127.0.0.1:8500]

Health, predict, feature maps, the summary, an explanation, the explorer page, and (with ``--grpc``)
ModelInfer over gRPC. Needs numpy, Pillow, httpx and tritonclient (the project's dev environment).
Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

DATASET = Path("/usr/share/datasets/fashion-mnist")
# Test-set image 0 is an ankle boot (class 9), which any trained model gets right.
KNOWN_GOOD = 0


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def load_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format): magic, dimension sizes, then uint8 data."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def run(base: str, model: str, dataset: Path, count: int, api_key: str | None, grpc_target: str | None) -> None:
    images = load_idx(dataset / "t10k-images-idx3-ubyte.gz")[:count]
    labels = load_idx(dataset / "t10k-labels-idx1-ubyte.gz")[:count]
    headers = {"X-API-Key": api_key} if api_key else {}
    api = f"{base}/api/v1/models/{model}"

    with httpx.Client(timeout=30, headers=headers) as client:
        for path in ("/health/live", "/health/ready"):
            response = client.get(base + path)
            check(response.status_code == 200, f"GET {path} -> {response.status_code} {response.text[:200]}")
        print("ok   health: live and ready")

        # One request with several images: one prediction per image, in order.
        files = [("files", (f"{i}.png", png(img), "image/png")) for i, img in enumerate(images)]
        response = client.post(f"{api}/predict", files=files)
        check(response.status_code == 200, f"predict -> {response.status_code} {response.text[:300]}")
        body = response.json()
        check(body.get("model_name") == model, f"model_name is {body.get('model_name')!r}")
        predictions = body["predictions"]
        check(len(predictions) == count, f"{len(predictions)} predictions for {count} images")
        top1 = []
        for i, prediction in enumerate(predictions):
            ranked = prediction["top_k"]
            probabilities = [entry["probability"] for entry in ranked]
            check(probabilities == sorted(probabilities, reverse=True), f"image {i}: top_k is not sorted")
            check(abs(sum(prediction["probabilities"]) - 1) < 1e-3, f"image {i}: probabilities do not sum to 1")
            top1.append(ranked[0])
        best = top1[KNOWN_GOOD]
        check(
            best["class_id"] == int(labels[KNOWN_GOOD]),
            f"test image {KNOWN_GOOD}: predicted {best['class_id']} ({best['label']}), true {labels[KNOWN_GOOD]}",
        )
        correct = sum(entry["class_id"] == int(label) for entry, label in zip(top1, labels, strict=True))
        check(correct >= count - 2, f"only {correct}/{count} test images classified correctly")
        print(
            f"ok   predict: {model} v{body.get('model_version')}; test image {KNOWN_GOOD} -> "
            f"{best['label']!r} (class {best['class_id']}, p={best['probability']:.3f}), true class "
            f"{labels[KNOWN_GOOD]}; {correct}/{count} correct in one batch"
        )

        detail = client.get(api).json()
        plan = detail.get("serving") or {}
        check(bool(plan.get("runtime")), f"the model detail does not say what it runs on: {detail.get('serving')}")
        tried = ", ".join(f"{t['runtime']}/{t['precision']}" for t in plan["timings"])
        print(f"ok   serving on {plan['runtime']}/{plan['precision']} ({plan['chosen_by']}; timed: {tried})")

        # The same image alone gives the same answer as inside the batch (to the precision served in).
        single = png(images[KNOWN_GOOD])
        response = client.post(f"{api}/predict", files=[("files", ("single.png", single, "image/png"))])
        check(response.status_code == 200, f"single predict -> {response.status_code}")
        alone = response.json()["predictions"][0]["probabilities"]
        check(
            np.allclose(
                alone, predictions[KNOWN_GOOD]["probabilities"], atol=1e-4 if plan["precision"] == "fp32" else 1e-2
            ),
            "single-image probabilities differ from the batched ones",
        )
        print("ok   predict: single image matches its batched result")

        response = client.post(f"{api}/predict", files=[("files", ("bad.png", b"not an image", "image/png"))])
        check(400 <= response.status_code < 500, f"undecodable image -> {response.status_code}, expected 4xx")
        print(f"ok   predict: undecodable image rejected with {response.status_code}")

        response = client.post(
            f"{api}/feature-maps",
            params={"layer": "conv1", "format": "png"},
            files={"file": ("0.png", single, "image/png")},
        )
        check(response.status_code == 200, f"feature-maps -> {response.status_code} {response.text[:300]}")
        content_type = response.headers.get("content-type", "")
        check(content_type.startswith("image/png"), f"feature-maps content-type {content_type!r}")
        grid = Image.open(io.BytesIO(response.content))
        grid.load()
        check(grid.width > 0 and grid.height > 0, "feature-map PNG is empty")
        print(f"ok   feature-maps: conv1 as PNG, {grid.width}x{grid.height}, {len(response.content)} bytes")

        response = client.get(f"{api}/summary")
        check(response.status_code == 200, f"summary -> {response.status_code} {response.text[:300]}")
        layers = response.json().get("layers")
        check(isinstance(layers, list) and layers, "summary has no `layers` list")
        names = [layer.get("name") for layer in layers if isinstance(layer, dict)]
        check("conv1" in names, f"summary layers {names} lack conv1")
        print(f"ok   summary: {len(layers)} layers ({', '.join(map(str, names))})")

        response = client.post(
            f"{api}/explain", params={"format": "png"}, files={"file": ("0.png", single, "image/png")}
        )
        check(response.status_code == 200, f"explain -> {response.status_code} {response.text[:300]}")
        overlay = Image.open(io.BytesIO(response.content))
        print(f"ok   explain: Grad-CAM overlay {overlay.width}x{overlay.height}")

        page = client.get(base + "/")
        check(page.status_code == 200 and "CNN explorer" in page.text, f"GET / -> {page.status_code}")
        check(client.get(base + "/explorer/explorer.js").status_code == 200, "the explorer's script is missing")
        print("ok   explorer page and its script are served")

    if grpc_target:
        check_grpc(grpc_target, model, images, [p["class_id"] for p in predictions], api_key)


def check_grpc(target: str, model: str, images: np.ndarray, rest_classes: list[int], api_key: str | None) -> None:
    """KServe v2 ModelInfer over gRPC gives the REST API's classes."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(target)
    check(client.is_server_ready(headers={"x-api-key": api_key} if api_key else None), "gRPC: server not ready")
    tensor = grpcclient.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer(model, [tensor], headers={"x-api-key": api_key} if api_key else None)
    classes = result.as_numpy("probabilities").argmax(axis=1).tolist()
    check(classes == rest_classes, f"gRPC classes {classes} differ from REST {rest_classes}")
    print(f"ok   gRPC ModelInfer on {target}: the REST API's classes for {len(images)} images")


def check_tf_serving(base: str, target: str, model: str, dataset: Path, count: int) -> None:
    """Run as TF Serving's image is run: its REST ``:predict`` and gRPC ``Predict`` agree, and know image 0."""
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    pixels = (load_idx(dataset / "t10k-images-idx3-ubyte.gz")[:count, :, :, None] / 255.0).astype(np.float32)
    labels = load_idx(dataset / "t10k-labels-idx1-ubyte.gz")[:count]
    response = httpx.post(f"{base}/v1/models/{model}:predict", json={"instances": pixels.tolist()}, timeout=60)
    check(response.status_code == 200, f"TF Serving REST predict: {response.status_code} {response.text[:200]}")
    rest_classes = np.asarray(response.json()["predictions"]).argmax(axis=1)
    check(rest_classes[KNOWN_GOOD] == labels[KNOWN_GOOD], f"REST calls image 0 class {rest_classes[KNOWN_GOOD]}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=pixels.tobytes())
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in pixels.shape)
    request.inputs["images"].CopyFrom(proto)
    with grpc.insecure_channel(target) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    grpc_classes = np.frombuffer(answer.outputs["probabilities"].tensor_content, np.float32).reshape(count, -1)
    check((grpc_classes.argmax(axis=1) == rest_classes).all(), "gRPC Predict and REST :predict disagree")
    print(f"ok   run as TF Serving's image: REST {base} and gRPC {target} give the same {count} classes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="service base URL")
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--dataset", type=Path, default=DATASET, help="folder with the t10k-*.gz files")
    parser.add_argument("--count", type=int, default=8, help="test images to send in one request")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--grpc", default=None, help="host:port of the gRPC server to check too")
    parser.add_argument("--tf-serving", action="store_true", help="only TF Serving's REST predict and gRPC Predict")
    args = parser.parse_args()
    try:
        if args.tf_serving:
            check_tf_serving(args.url.rstrip("/"), args.grpc, args.model, args.dataset, args.count)
        else:
            run(args.url.rstrip("/"), args.model, args.dataset, args.count, args.api_key, args.grpc)
    except (CheckFailed, httpx.HTTPError, KeyError, ValueError) as exc:
        print(f"FAIL {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
