"""Liveness, readiness (native and v2 paths) and the Prometheus endpoint.

Liveness: the process answers. Readiness: the first load is done, at least one version is AVAILABLE
(loaded, warmed up, with a live batch worker), and every model named in ``CNN_MODELS`` or the model
config file has an AVAILABLE version.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.errors import RETRY_AFTER
from service.protocol.native import Liveness, Readiness

router = APIRouter(tags=["health"])


def _readiness(content: dict, ready: bool) -> JSONResponse:
    """200, or 503 with ``Retry-After`` while not ready."""
    return JSONResponse(content, status_code=200 if ready else 503, headers=None if ready else RETRY_AFTER)


@router.get("/health/live", response_model=Liveness, summary="Liveness")
@router.get("/v2/health/live", response_model=Liveness, summary="Liveness (v2)", tags=["open-inference-protocol-v2"])
async def live() -> Liveness:
    return Liveness(live=True)


@router.get("/health/ready", response_model=Readiness, summary="Readiness", responses={503: {"model": Readiness}})
async def ready(request: Request) -> JSONResponse:
    is_ready, states = request.app.state.plane.table.readiness()
    return _readiness({"ready": is_ready, "models": states}, is_ready)


@router.get(
    "/v2/health/ready",
    summary="Readiness (v2)",
    tags=["open-inference-protocol-v2"],
    responses={503: {"description": "Not ready"}},
)
async def ready_v2(request: Request) -> JSONResponse:
    is_ready, _ = request.app.state.plane.table.readiness()
    return _readiness({"ready": is_ready}, is_ready)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)
