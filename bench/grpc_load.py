"""gRPC load for KServe v2 ``ModelInfer`` from h2load, nghttp2's HTTP/2 load generator (in C, as wrk is).

A closed loop like the REST scenarios': ``streams`` calls in flight on one HTTP/2 connection, each sending
its next call when its answer arrives; every call is one ``ModelInferRequest`` of ``batch`` test images as
FP32 ``raw_input_contents`` (as ``tritonclient.grpc`` sends them), framed as gRPC's length-prefixed message.

h2load counts HTTP answers, and a failed gRPC call still answers HTTP 200, with its status in the trailers
and no message. So a call counts as answered by its message alone: the answers' bytes over one answer's
size, taken from a call through the Python client first (every answer of a run has the same size); the
calls short of that are the errors. Latency percentiles come from h2load's per-request log, and its CPU
time from the kernel, like wrk's.
"""

from __future__ import annotations

import re
import shutil
import struct
import tempfile
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.message import Message
from tritonclient.grpc import service_pb2, service_pb2_grpc

from bench.wrk import WrkError, WrkResult, run_measured
from models.data import to_model_input

PATH = "/inference.GRPCInferenceService/ModelInfer"
_MAX_MESSAGE = 64 * 1024 * 1024


def build_request(images: np.ndarray, model: str) -> service_pb2.ModelInferRequest:
    """One ``ModelInfer`` call classifying ``images`` (uint8 28×28), as raw FP32 contents."""
    tensor = np.ascontiguousarray(to_model_input(images), dtype="<f4")
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="images", datatype="FP32", shape=list(tensor.shape))
    request.outputs.add(name="probabilities")
    request.raw_input_contents.append(tensor.tobytes())
    return request


def framed(message: Message) -> bytes:
    """``message`` as gRPC frames it on the wire: not compressed, its length (big-endian), its bytes."""
    data = message.SerializeToString()
    return struct.pack(">?I", False, len(data)) + data


def call_once(target: str, request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
    """One plain, synchronous ``ModelInfer`` call."""
    options = [("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE)]
    with grpc.insecure_channel(target, options=options) as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)


def classify_once(target: str, model: str, images: Path) -> int:
    """The class the server gives the first image of ``images``."""
    answer = call_once(target, build_request(np.load(images)[:1], model))
    if answer.raw_output_contents:
        return int(np.frombuffer(answer.raw_output_contents[0], dtype="<f4").argmax())
    return int(np.argmax(answer.outputs[0].contents.fp32_contents))  # servers that answer with typed contents


def h2load_binary() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise WrkError("h2load is not installed (Debian: apt-get install nghttp2-client)")
    return path


def run_grpc_load(port: int, images: np.ndarray, model: str, *, streams: int, duration_s: float) -> WrkResult:
    """``streams`` ``ModelInfer`` calls of ``images`` in flight on one connection to ``127.0.0.1:port`` for
    ``duration_s`` seconds."""
    request = build_request(images, model)
    answer = call_once(f"127.0.0.1:{port}", request)
    with tempfile.TemporaryDirectory() as work:
        body, log = Path(work) / "body", Path(work) / "requests.log"
        body.write_bytes(framed(request))
        argv = [
            h2load_binary(), "-c1", f"-m{streams}", f"-D{duration_s:g}", f"--log-file={log}",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
            f"http://127.0.0.1:{port}{PATH}",
        ]  # fmt: skip
        returncode, cpu_s, stdout, stderr = run_measured(argv, duration_s + 60)
        if returncode != 0:
            raise WrkError(f"h2load exited {returncode}: {stderr.strip() or stdout.strip()}")
        summary = parse_summary(stdout)
        elapsed_ms = np.loadtxt(log, usecols=2, ndmin=1) / 1000 if log.stat().st_size else np.zeros(1)
    answered, errors = count_answers(summary, len(framed(answer)))
    return WrkResult(
        connections=streams,
        duration_s=summary["seconds"],
        requests=answered,
        images_per_request=len(images),
        errors={kind: count for kind, count in errors.items() if count},
        latency_ms={f"p{q}": float(np.percentile(elapsed_ms, q)) for q in (50, 75, 90, 95, 99)},
        wrk_cpu_s=cpu_s,
    )


def parse_summary(stdout: str) -> dict[str, float]:
    """h2load's summary: seconds run, calls done and answered 2xx, and the answers' DATA bytes."""
    patterns = {
        "seconds": r"finished in ([\d.]+(?:us|ms|s))",
        "done": r"requests: \d+ total, \d+ started, (\d+) done",
        "succeeded": r"(\d+) succeeded",
        "data_bytes": r"\((\d+)\) data",
    }
    summary: dict[str, float] = {}
    for key, pattern in patterns.items():
        found = re.search(pattern, stdout)
        if found is None:
            raise WrkError(f"h2load printed no {key!r}: {stdout.strip()[-500:]}")
        summary[key] = _seconds(found.group(1)) if key == "seconds" else int(found.group(1))
    return summary


def count_answers(summary: dict[str, float], answer_bytes: int) -> tuple[int, dict[str, int]]:
    """The calls answered with a message (``answer_bytes`` each), and the errors by kind: HTTP statuses
    other than 2xx, gRPC failures (a 2xx without a message), and answers of another size."""
    answered, left = divmod(int(summary["data_bytes"]), answer_bytes)
    errors = {
        "http": int(summary["done"] - summary["succeeded"]),
        "grpc": max(int(summary["succeeded"]) - answered, 0),
        "answer size": int(left != 0 or answered > summary["succeeded"]),
    }
    return answered, {kind: count for kind, count in errors.items() if count}


def _seconds(text: str) -> float:
    """h2load's duration ("12.00s", "160.90ms", "850us") in seconds."""
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * scale
    raise WrkError(f"h2load printed an unknown duration {text!r}")
