"""A gRPC load generator for KServe v2 ``ModelInfer``: ``python -m bench.grpc_load``.

``--streams`` calls in flight at once on one HTTP/2 connection (each a coroutine that sends its next
call when the last one answers), each call a batch of ``--batch`` test images as FP32
``raw_input_contents``, as ``tritonclient.grpc`` sends them. Runs a warm-up, then a timed window, and
prints one JSON line shaped like :class:`bench.wrk.WrkResult` (``wrk_cpu_s`` is this process's own CPU
time), so the orchestrator treats it like a wrk run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc
import numpy as np
import uvloop
from tritonclient.grpc import service_pb2, service_pb2_grpc

from bench.wrk import WrkResult
from models.data import to_model_input

_MAX_MESSAGE = 64 * 1024 * 1024


def build_requests(images: np.ndarray, model: str, batch: int) -> list[service_pb2.ModelInferRequest]:
    requests = []
    for start in range(0, len(images) - batch + 1, batch):
        tensor = np.ascontiguousarray(to_model_input(images[start : start + batch]), dtype="<f4")
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name="images", datatype="FP32", shape=list(tensor.shape))
        request.outputs.add(name="probabilities")
        request.raw_input_contents.append(tensor.tobytes())
        requests.append(request)
    return requests


async def _load(target: str, requests: list, streams: int, warmup_s: float, duration_s: float) -> dict:
    options = [("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", _MAX_MESSAGE)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        check = await stub.ModelInfer(requests[0], timeout=60)
        if list(check.outputs[0].shape) != [len(requests[0].raw_input_contents[0]) // (28 * 28 * 4), 10]:
            raise SystemExit(f"unexpected answer shape {list(check.outputs[0].shape)}")
        latencies: list[float] = []
        errors: dict[str, int] = {}
        measuring = False

        async def stream(index: int, until: float) -> None:
            call = index
            while time.monotonic() < until:
                started = time.perf_counter()
                try:
                    await stub.ModelInfer(requests[call % len(requests)], timeout=60)
                except grpc.aio.AioRpcError as exc:
                    if measuring:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                finally:
                    call += streams
                if measuring:
                    latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(stream(i, time.monotonic() + warmup_s) for i in range(streams)))
        measuring = True
        cpu, started = time.process_time(), time.monotonic()
        await asyncio.gather(*(stream(i, started + duration_s) for i in range(streams)))
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    result = WrkResult(
        connections=streams,
        duration_s=elapsed,
        requests=len(latencies),
        images_per_request=len(requests[0].raw_input_contents[0]) // (28 * 28 * 4),
        errors=errors,
        latency_ms={f"p{q}": float(np.percentile(lat, q)) for q in (50, 75, 90, 95, 99)},
        wrk_cpu_s=cpu,
    )
    return result.to_dict()


def classify_once(target: str, model: str, images: Path) -> int:
    """The class the server gives the first image of ``images`` (a plain, synchronous call)."""
    (request,) = build_requests(np.load(images)[:1], model, 1)
    with grpc.insecure_channel(target) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    if answer.raw_output_contents:
        return int(np.frombuffer(answer.raw_output_contents[0], dtype="<f4").argmax())
    return int(np.argmax(answer.outputs[0].contents.fp32_contents))  # servers that answer with typed contents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the gRPC server")
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--images", type=Path, required=True, help=".npy of uint8 28×28 test images")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=12.0)
    args = parser.parse_args()
    requests = build_requests(np.load(args.images), args.model, args.batch)
    if not requests:
        raise SystemExit(f"{args.images} holds fewer than {args.batch} images")
    print(json.dumps(uvloop.run(_load(args.target, requests, args.streams, args.warmup, args.duration))))


if __name__ == "__main__":
    main()
