"""``predict``, ``summary`` and ``models``: a running server's public native API, as tables or JSON.

Built on httpx and the documented routes only (``/api/v1``), so they work against any deployment.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """The server could not be reached, or answered with an error (the message says which)."""


def _call(method: str, url: str, path: str, api_key: str | None, **kwargs: Any) -> Any:
    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=60, **kwargs)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach {url}: {exc}") from None
    if response.status_code >= 400:
        try:
            reason = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200]
        raise ClientError(f"{method} {path}: {response.status_code} {reason}")
    return response.json()


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and bool(rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *(line(row) for row in cells[1:])])


def predict(url: str, model: str, images: Sequence[Path], top_k: int, api_key: str | None, as_json: bool) -> str:
    files = []
    for path in images:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"{path}: {exc.strerror}") from None
        files.append(("files", (path.name, content, mimetypes.guess_type(path.name)[0] or "application/octet-stream")))
    answer = _call("POST", url, f"/api/v1/models/{model}/predict", api_key, files=files, params={"top_k": top_k})
    if as_json:
        return json.dumps(answer, indent=2)
    rows = []
    for path, prediction in zip(images, answer["predictions"], strict=True):
        others = ", ".join(f"{s['label']} {s['probability']:.1%}" for s in prediction["top_k"][1:])
        rows.append([str(path), prediction["label"], f"{prediction['probability']:.1%}", others])
    title = f"{answer['model_name']} version {answer['model_version']}"
    return title + "\n" + _table(["image", "class", "probability", "next"], rows)


def summary(url: str, model: str, api_key: str | None, as_json: bool) -> str:
    answer = _call("GET", url, f"/api/v1/models/{model}/summary", api_key)
    if as_json:
        return json.dumps(answer, indent=2)
    rows = [
        [
            layer["name"], layer["type"], "×".join(map(str, layer["output_shape"])),
            "×".join(map(str, layer["kernel_size"] or [])) or "-", layer["params"], layer["mult_adds"],
            f"{layer['memory_bytes'] / 1024:.1f}", "×".join(map(str, layer["receptive_field"])),
        ]
        for layer in answer["layers"]
    ]  # fmt: skip
    totals = (f"{answer['total_params']:,} parameters, {answer['total_mult_adds']:,} multiply-adds and "
              f"{answer['total_activation_bytes'] / 1024:.1f} KiB of activations per image")  # fmt: skip
    header = ["layer", "type", "output", "kernel", "params", "mult-adds", "KiB", "receptive field"]
    return f"{answer['name']}, input {'×'.join(map(str, answer['input_shape']))}\n{_table(header, rows)}\n{totals}"


def models(url: str, api_key: str | None, as_json: bool) -> str:
    answer = _call("GET", url, "/api/v1/models", api_key)
    if as_json:
        return json.dumps(answer, indent=2)
    rows = []
    for entry in answer["models"]:
        labels = {version: [] for version in (v["version"] for v in entry["versions"])}
        for label, version in entry["labels"].items():
            labels.setdefault(version, []).append(label)
        for version in entry["versions"]:
            default = "yes" if version["version"] == entry["default_version"] else ""
            names = ", ".join(sorted(labels.get(version["version"], [])))
            rows.append([entry["name"], version["version"], version["state"], default, names, version["error"] or ""])
    return _table(["model", "version", "state", "default", "labels", "error"], rows)
