"""The Open Inference Protocol's model repository extension: index, load and unload (``/v2/repository``).

Stock clients (``tritonclient.http``'s ``get_model_repository_index``, ``load_model``, ``unload_model``)
work unchanged. Load applies the model's version policy at once; unload releases every version and
keeps the model unloaded, whatever the poller sees, until its directory changes. Load and unload are
management calls: they need the API key when one is set, and model control allowed
(``CNN_ALLOW_MODEL_CONTROL``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from service.core.errors import InvalidInput, PayloadTooLarge, describe_validation
from service.core.wire import json_response
from service.protocol.plane import DataPlane
from service.protocol.v2 import IndexEntry, repository_index
from service.transports.dependencies import get_plane, require_api_key, require_model_control

MAX_CONTROL_BODY = 4096

router = APIRouter(
    prefix="/v2/repository", tags=["open-inference-protocol-v2"], dependencies=[Depends(require_api_key)]
)


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool = False


class ControlRequest(BaseModel):
    """Load and unload bodies. ``unload_dependents`` has no meaning here (no ensembles); loading from
    an uploaded config or files is not supported."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = {}


async def _body(request: Request, schema: type[BaseModel]) -> Any:
    """The optional JSON body (empty is accepted), checked against ``schema``; these bodies are a few
    bytes, so one over :data:`MAX_CONTROL_BODY` is refused before it is parsed (on the event loop)."""
    raw = await request.body()
    if len(raw) > MAX_CONTROL_BODY:
        raise PayloadTooLarge(f"a repository request body is at most {MAX_CONTROL_BODY} bytes, got {len(raw)}")
    try:
        return schema.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise InvalidInput(f"invalid request body: {describe_validation(exc)}") from None


@router.post(
    "/index",
    response_model=list[IndexEntry],
    summary="Model repository index",
    description='Every model version and its state. Body (optional): `{"ready": true}` lists only READY ones.',
)
async def index(request: Request, plane: Annotated[DataPlane, Depends(get_plane)]) -> Response:
    entries = repository_index(plane.table, only_ready=(await _body(request, IndexRequest)).ready)
    return json_response([e.model_dump() for e in entries])


@router.post(
    "/models/{name}/load",
    summary="Load a model (apply its version policy now)",
    dependencies=[Depends(require_model_control)],
    responses={400: {"description": "No version could be loaded"}},
)
async def load(name: str, request: Request, plane: Annotated[DataPlane, Depends(get_plane)]) -> Response:
    parameters = (await _body(request, ControlRequest)).parameters
    if any(key == "config" or key.startswith("file:") for key in parameters):
        raise InvalidInput("loading from a config or files sent with the request is not supported")
    await plane.control.load(name)
    return json_response({})


@router.post(
    "/models/{name}/unload",
    summary="Unload every version of a model (until its directory changes)",
    dependencies=[Depends(require_model_control)],
)
async def unload(name: str, request: Request, plane: Annotated[DataPlane, Depends(get_plane)]) -> Response:
    await _body(request, ControlRequest)
    await plane.control.unload(name)
    return json_response({})
