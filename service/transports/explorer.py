"""The CNN explorer: a web page at ``/`` over the public native API, its assets under ``/explorer``.

The page (``service/transports/static/explorer``) is plain HTML, CSS and JavaScript that ship in the package: no
build step, nothing loaded from another site. It calls only the API every client uses, with the API
key the user enters when the server asks for one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "explorer"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(ASSETS / "index.html", headers={"Cache-Control": "no-cache"})


def add_explorer(app: FastAPI) -> None:
    """Serve the page at ``/`` and its scripts, styles and sample images at ``/explorer``."""
    app.include_router(router)
    app.mount("/explorer", StaticFiles(directory=ASSETS), name="explorer")
