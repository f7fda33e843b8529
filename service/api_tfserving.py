"""TensorFlow Serving's REST API (``/v1/models/...``): status, metadata and predict; and KServe v1's
``:explain`` on the same paths.

``:predict`` is the hot path: a :class:`~service.routing.DirectRoute` that hands the body to the
pipeline with the pure codec of :mod:`service.codecs.tfserving`. Errors are ``{"error": ...}`` bodies,
as TF Serving answers them.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from contract import FEATURE_MAPS_SIGNATURE, SERVING_SIGNATURE
from service.codecs import tfserving
from service.dependencies import explain_spec, get_pipeline, get_runtime, require_api_key
from service.pipeline import InferencePipeline
from service.repository import ModelVersion, VersionState
from service.request import ExplainSpec, Operation
from service.routing import DirectRoute, version_ref, versioned_route
from service.runtime import Runtime
from service.wire import json_response

TAGS = ["tensorflow-serving"]
router = APIRouter(prefix="/v1", tags=TAGS, dependencies=[Depends(require_api_key)])


def version_status(model: ModelVersion) -> dict[str, Any]:
    """TF Serving's ``ModelVersionStatus`` (REST and gRPC): a failed load is END with its error."""
    failed = model.state is VersionState.END and model.error is not None
    return {
        "version": str(model.version),
        "state": model.state.value,
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": model.error if failed else ""},
    }


def _tensor_info(name: str, shape: list[int]) -> dict[str, Any]:
    return {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False},
        "name": f"{name}:0",
    }


def signature_defs(model: ModelVersion) -> dict[str, Any]:
    card = model.loaded_card
    image = {card.input.name: _tensor_info(card.input.name, card.input.shape)}
    layers = {layer.name: layer for layer in card.summary.layers} if card.summary else {}
    feature_outputs = {
        name: _tensor_info(name, [-1, *layers[name].output_shape]) if name in layers else _tensor_info(name, [-1])
        for name in card.feature_layers
    }
    return {
        SERVING_SIGNATURE: {
            "inputs": image,
            "outputs": {card.output.name: _tensor_info(card.output.name, card.output.shape)},
            "method_name": "tensorflow/serving/predict",
        },
        FEATURE_MAPS_SIGNATURE: {
            "inputs": image,
            "outputs": feature_outputs,
            "method_name": "tensorflow/serving/predict",
        },
    }


@versioned_route(router, "get", "/models/{name}", summary="Model version status (newest first)")
async def model_status(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    ref = version_ref(version, label)
    models = [runtime.find(name, ref)] if ref is not None else runtime.repository.versions(name)
    return json_response({"model_version_status": [version_status(m) for m in models]})


@versioned_route(router, "get", "/models/{name}/metadata", summary="Signature metadata")
async def model_metadata(
    name: str,
    runtime: Annotated[Runtime, Depends(get_runtime)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    model = runtime.served(name, version_ref(version, label)).version
    return json_response(
        {
            "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
            "metadata": {
                "signature_def": {"signature_def": signature_defs(model)},
                "serving": model.plan.model_dump(mode="json") if model.plan else None,
            },
        }
    )


_PREDICT_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": tfserving.TFServingPredictRequest.model_json_schema()}},
    }
}


@versioned_route(
    router,
    "post",
    "/models/{name}:explain",
    summary="Explain (KServe v1)",
    description="KServe's v1 `:explain`: the body of `:predict` (`instances` or `inputs`, tensors or "
    '`{"b64": ...}` images); the method and its parameters in the query string. Answers '
    '`{"explanations": [{"method", "layer", "target", "label", "probability", "heatmap"}, ...]}`, one per '
    "image, each heatmap the model's input size with values in [0, 1].",
    openapi_extra=_PREDICT_DOC,
)
async def explain(
    name: str,
    request: Request,
    pipeline: Annotated[InferencePipeline, Depends(get_pipeline)],
    spec: Annotated[ExplainSpec, Depends(explain_spec)],
    version: str | None = None,
    label: str | None = None,
) -> Response:
    ref = version_ref(version, label)
    pipeline.admit(name, ref, Operation.explain)
    decode = partial(tfserving.decode_explain, model=name, version=ref, spec=spec)
    return await pipeline.handle(decode, tfserving.encode_explain, await request.body())


async def predict(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    pipeline = request.app.state.pipeline
    ref = version_ref(version, label)
    pipeline.admit(name, ref)  # 404, or an early 503, before the body is read
    decode = partial(tfserving.decode_predict, model=name, version=ref)
    return await pipeline.handle(decode, tfserving.encode_predict, await request.body())


def add_predict_routes(router: APIRouter, **kwargs: Any) -> None:
    """``POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict`` as direct routes of ``router``.

    The app puts them on its own router, ahead of the included ones: the hot path is matched first and
    without the included-router indirection.
    """
    versioned_route(
        router, "add_api_route", "/v1/models/{name}:predict", methods=["POST"], route_class_override=DirectRoute,
        dependencies=[Depends(require_api_key)], tags=TAGS, summary="Predict (TF Serving)",
        openapi_extra=_PREDICT_DOC, **kwargs,
    )(predict)  # fmt: skip
