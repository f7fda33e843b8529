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

from service.dependencies import get_runtime, require_api_key, require_model_control
from service.errors import InvalidInput
from service.repository import ModelVersion, VersionState
from service.runtime import Runtime
from service.wire import json_response

router = APIRouter(
    prefix="/v2/repository", tags=["open-inference-protocol-v2"], dependencies=[Depends(require_api_key)]
)

# The extension's states: READY, UNAVAILABLE, LOADING, UNLOADING.
_STATE = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
}


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: bool = False


class ControlRequest(BaseModel):
    """Load and unload bodies. ``unload_dependents`` has no meaning here (no ensembles); loading from
    an uploaded config or files is not supported."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = {}


class IndexEntry(BaseModel):
    name: str
    version: str = ""
    state: str
    reason: str = ""


async def _body(request: Request, schema: type[BaseModel]) -> Any:
    """The optional JSON body (empty is accepted), checked against ``schema``."""
    raw = await request.body()
    try:
        return schema.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(map(str, problem["loc"])) or "body"
        raise InvalidInput(f"invalid request body: {where}: {problem['msg']}") from None


def _entry(runtime: Runtime, model: ModelVersion) -> IndexEntry:
    state = "READY" if runtime.is_ready(model) else _STATE[model.state]
    reason = model.error or ("unloaded" if model.state is VersionState.END else "")
    return IndexEntry(name=model.name, version=str(model.version), state=state, reason=reason)


@router.post(
    "/index",
    response_model=list[IndexEntry],
    summary="Model repository index",
    description='Every model version and its state. Body (optional): `{"ready": true}` lists only READY ones.',
)
async def index(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    entries = repository_index(runtime, only_ready=(await _body(request, IndexRequest)).ready)
    return json_response([e.model_dump() for e in entries])


def repository_index(runtime: Runtime, only_ready: bool) -> list[IndexEntry]:
    """Every model version and its state (REST and gRPC)."""
    entries = []
    for name in sorted(runtime.model_names):
        versions = runtime.repository.versions(name)
        if not versions and not only_ready:
            entries.append(IndexEntry(name=name, state="UNAVAILABLE", reason="no version found"))
        entries += [_entry(runtime, v) for v in versions]
    return [e for e in entries if e.state == "READY" or not only_ready]


@router.post(
    "/models/{name}/load",
    summary="Load a model (apply its version policy now)",
    dependencies=[Depends(require_model_control)],
    responses={400: {"description": "No version could be loaded"}},
)
async def load(name: str, request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    parameters = (await _body(request, ControlRequest)).parameters
    if any(key == "config" or key.startswith("file:") for key in parameters):
        raise InvalidInput("loading from a config or files sent with the request is not supported")
    await runtime.load_model(name)
    return json_response({})


@router.post(
    "/models/{name}/unload",
    summary="Unload every version of a model (until its directory changes)",
    dependencies=[Depends(require_model_control)],
)
async def unload(name: str, request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    await _body(request, ControlRequest)
    await runtime.unload_model(name)
    return json_response({})
