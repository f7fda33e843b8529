"""The floor: the least a Python server can spend on a v2 ``infer`` (or TF Serving ``:predict``) request on
this machine, over REST and over gRPC.

uvicorn (uvloop, httptools) and one bare ASGI callable around the service's own batcher
(:class:`service.hosting.batcher.Batcher`, the service's default batching settings, GIL switch interval and
thread priorities) and the served engine (the OpenVINO model the peers serve, in the service's own engine
class, :class:`service.hosting.engines.OpenVino`, with as many calls at once as the service makes). It does
only what the wire format needs: read the body, parse the JSON (simdjson, its numbers read straight into an
array: the cheapest parse known here) or take the binary tensor (numpy), batch, run, and write the answer.
No routing table, validation, policy headers, metrics per request, error mapping or version lookup: what is
left between it and the service is the cost of those. With ``--grpc-port``, a ``grpc.aio`` server in the
same event loop answers ``ModelInfer`` (raw FP32 contents in and out) through the same batcher, as barely.
The benchmark runs it on the one-image v2 scenarios, beside MLServer, and on the 64-image ones, beside the
engine in-process, to show how much of any gap to a target a serving layer written in Python can close here
at all.

Run: ``python -m bench.floor_server --openvino-ir <model.xml> --model-dir <version dir> --precision fp32|bf16|int8
--port <port> [--grpc-port <port>]``;
``GET /metrics`` gives the batcher's metrics (the benchmark reads the mean batch size from them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import simdjson
import uvicorn
from prometheus_client import generate_latest
from starlette.types import Receive, Scope, Send
from tritonclient.grpc import service_pb2

from contract import ModelCard
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.hosting.batcher import Batcher
from service.hosting.engines import OPENVINO_CPU_PRECISIONS, OpenVino
from service.hosting.planner import ladder
from service.hosting.priority import lower_current_thread
from service.inference.pipeline import _OFFLOAD_PARSE_BYTES  # bodies larger than this are parsed in a thread

_HEADER_LENGTH = b"inference-header-content-length"


class FloorApp:
    """``POST /v2/models/{model}/infer`` (one FP32 input, JSON ``data`` or binary), ``POST
    /v1/models/{model}:predict`` (``instances`` as numbers), ``GET /metrics``; any other request gets an empty
    200 (the readiness probe)."""

    def __init__(self, ir: str, model_dir: Path, precision: str, model: str, grpc_port: int = 0) -> None:
        import openvino

        card, s = ModelCard.read(model_dir), Settings()
        self.engine = OpenVino(openvino.Core().read_model(ir), card, precision)
        warm_up = [np.zeros((size, *card.input_shape), np.float32) for size in ladder(s.max_batch_size)]

        def prepare() -> int:  # in a thread below the event loop, as the service's loader: so are the engine's
            lower_current_thread(s.compute_nice)
            for batch in warm_up:
                self.engine.predict(batch)
            return self.engine.allow_concurrent_calls(s.max_concurrent_batches, warm_up)

        with ThreadPoolExecutor(max_workers=1) as loader:
            self.calls = loader.submit(prepare).result()
        self.model = model
        self.input_shape = card.input_shape
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.grpc_port = grpc_port
        self.grpc: grpc.aio.Server | None = None

    async def _start(self) -> None:
        s = Settings()
        sys.setswitchinterval(s.gil_switch_interval_ms / 1000)  # as the service does while serving
        self.batcher = Batcher(
            f"{self.model}:1", self.engine.predict, self.metrics, max_batch_size=s.max_batch_size,
            max_concurrent_batches=self.calls, max_wait_s=s.max_batch_wait_ms / 1000,
            max_queue_images=s.max_queue_images, queue_timeout_s=s.queue_timeout_s,
            request_timeout_s=s.request_timeout_s, nice=s.compute_nice,
        )  # fmt: skip
        self.batcher.start()
        if self.grpc_port:
            self.grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", s.max_request_bytes)])
            handler = grpc.unary_unary_rpc_method_handler(
                self._model_infer,
                request_deserializer=service_pb2.ModelInferRequest.FromString,
                response_serializer=service_pb2.ModelInferResponse.SerializeToString,
            )
            self.grpc.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})]
            )
            self.grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
            await self.grpc.start()

    async def _model_infer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """``ModelInfer`` with its one input as raw FP32 contents; the answer as raw contents too."""
        assert self.batcher is not None
        images = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(request.inputs[0].shape)
        probabilities = await self.batcher.submit(images)
        response = service_pb2.ModelInferResponse(model_name=self.model, model_version="1")
        response.outputs.add(name="probabilities", datatype="FP32", shape=list(probabilities.shape))
        response.raw_output_contents.append(np.ascontiguousarray(probabilities, "<f4").tobytes())
        return response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await self._start()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            if self.grpc is not None:
                await self.grpc.stop(1)
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] != "POST":
            body = generate_latest(self.metrics.registry) if scope["path"] == "/metrics" else b""
            await _answer(send, 200, [], body)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            if scope["path"].endswith(":predict"):
                status, headers, answer = await self._predict(body)
            else:
                status, headers, answer = await self._infer(body, dict(scope["headers"]).get(_HEADER_LENGTH))
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            status, headers, answer = 400, [], orjson.dumps({"error": str(exc)})
        await _answer(send, status, headers, answer)

    async def _infer(self, body: bytes, header_length: bytes | None) -> tuple[int, list, bytes]:
        assert self.batcher is not None
        probabilities = await self.batcher.submit(await _decoded(_v2_images, body, header_length))
        output: dict[str, Any] = {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape)}
        response = {"model_name": self.model, "model_version": "1", "outputs": [output]}
        if not header_length:
            output["data"] = probabilities.reshape(-1)
            return (
                200,
                [(b"content-type", b"application/json")],
                orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY),
            )
        payload = np.ascontiguousarray(probabilities, "<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(payload)}
        header = orjson.dumps(response)
        headers = [(b"content-type", b"application/octet-stream"), (_HEADER_LENGTH, str(len(header)).encode())]
        return 200, headers, header + payload

    async def _predict(self, body: bytes) -> tuple[int, list, bytes]:
        """TF Serving's ``:predict`` with ``instances`` (rows of numbers), answered as ``predictions``."""
        assert self.batcher is not None
        probabilities = await self.batcher.submit(await _decoded(self._instances, body))
        answer = orjson.dumps({"predictions": probabilities}, option=orjson.OPT_SERIALIZE_NUMPY)
        return 200, [(b"content-type", b"application/json")], answer

    def _instances(self, body: bytes) -> np.ndarray:
        return _numbers(simdjson.Parser().parse(body)["instances"]).reshape(-1, *self.input_shape)


async def _decoded(decode: Callable[..., np.ndarray], body: bytes, *args: Any) -> np.ndarray:
    """``decode(body, *args)``: in a thread when the body is large, as the service parses it (parsed on the
    event loop, a 64-image JSON body cost more here: its parser's buffers were mapped afresh for every
    request)."""
    if len(body) > _OFFLOAD_PARSE_BYTES:
        return await asyncio.to_thread(decode, body, *args)
    return decode(body, *args)


def _v2_images(body: bytes, header_length: bytes | None) -> np.ndarray:
    """The one input of a v2 ``infer`` body: JSON ``data``, or the binary part after the JSON header."""
    split = int(header_length) if header_length else len(body)
    tensor = simdjson.Parser().parse(body[:split] if header_length else body)["inputs"][0]
    images = np.frombuffer(body[split:], "<f4") if header_length else _numbers(tensor["data"])
    return images.reshape(tensor["shape"].as_list())


def _numbers(array: Any) -> np.ndarray:
    """A parsed JSON array's numbers, nested lists flattened, as float32 (no Python float per value)."""
    return np.frombuffer(array.as_buffer(of_type="d"), np.float64).astype(np.float32)


async def _answer(send: Send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--openvino-ir", required=True, help="the OpenVINO model (.xml) the peers serve")
    parser.add_argument("--model-dir", type=Path, required=True, help="the version directory (its model card)")
    parser.add_argument("--precision", default="fp32", choices=OPENVINO_CPU_PRECISIONS)
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0, help="also answer ModelInfer over gRPC on this port")
    args = parser.parse_args()
    app = FloorApp(args.openvino_ir, args.model_dir, args.precision, args.model, args.grpc_port)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")  # fmt: skip


if __name__ == "__main__":
    main()
