"""Open Inference Protocol v2 (KServe / Triton) over REST: server and model metadata, readiness, infer.

``infer`` hands the body to the pipeline with the pure codec of :mod:`service.codecs.v2` (JSON and
the binary tensor data extension).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service import SERVER_NAME, __version__
from service.codecs import v2
from service.dependencies import get_pipeline, get_runtime, require_api_key
from service.pipeline import InferencePipeline
from service.routing import version_ref, versioned_route
from service.runtime import Runtime
from service.wire import json_response

router = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"], dependencies=[Depends(require_api_key)])


def server_info() -> v2.ServerMetadata:
    """The server's name, version and protocol extensions (REST and gRPC)."""
    extensions = ["binary_tensor_data", "model_repository"]
    return v2.ServerMetadata(name=SERVER_NAME, version=__version__, extensions=extensions)


def model_info(runtime: Runtime, name: str, ref: int | str | None) -> v2.ModelMetadata:
    """A served version's metadata: its versions, platform and tensors (REST and gRPC)."""
    served = runtime.served(name, ref)
    card = served.card
    return v2.ModelMetadata(
        name=served.version.name,
        versions=[str(v) for v in sorted(runtime.repository.models[served.version.name])],
        platform="tensorflow_savedmodel",
        inputs=[v2.TensorMetadata(name=card.input.name, datatype="FP32", shape=card.input.shape)],
        outputs=[v2.TensorMetadata(name=card.output.name, datatype="FP32", shape=card.output.shape)],
        serving=served.version.plan,
    )


@router.get("", response_model=v2.ServerMetadata, summary="Server metadata")
async def server_metadata() -> v2.ServerMetadata:
    return server_info()


@versioned_route(router, "get", "/models/{name}", response_model=v2.ModelMetadata, summary="Model metadata")
async def model_metadata(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: str | None = None,
    label: str | None = None,
) -> v2.ModelMetadata:
    return model_info(runtime, name, version_ref(version, label))


@versioned_route(
    router,
    "get",
    "/models/{name}/ready",
    response_model=v2.ModelReady,
    summary="Model readiness",
    responses={503: {"model": v2.ModelReady}},
)
async def model_ready(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    model = runtime.find(name, version_ref(version, label))
    ready = runtime.is_ready(model)
    return json_response({"name": model.name, "ready": ready}, 200 if ready else 503)


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline a pydantic schema's ``$defs``: its ``#/$defs/...`` references do not resolve inside OpenAPI."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference.startswith("#/$defs/"):
                return resolve(definitions[reference.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline_defs(v2.InferRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header (length in Inference-Header-Content-Length) followed by tensor bytes.",
            },
        },
    }
}


@versioned_route(router, "post", "/models/{name}/infer", summary="Inference (v2)", openapi_extra=_INFER_DOC)
async def infer(
    name: str,
    request: Request,
    pipeline: Annotated[InferencePipeline, Depends(get_pipeline)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    ref = version_ref(version, label)
    pipeline.admit(name, ref)
    decode = partial(v2.decode_infer, model=name, version=ref, header_length=request.headers.get(v2.HEADER_LENGTH))
    return await pipeline.handle(decode, v2.encode_infer, await request.body())
