"""The one inference path below every API dialect.

Dialects decode their wire format into a validated ``(n, h, w, c)`` float32 array for a
:class:`~service.repository.ModelVersion`, call :meth:`Inference.classify` (batched) or
:meth:`Inference.feature_maps`, and encode the result.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput
from service.metrics import Metrics
from service.preprocess import Polarity, images_to_batch, validate_tensor
from service.repository import ModelRepository, ModelVersion
from service.settings import Settings

# Bodies or images above this size are parsed/decoded in a thread so the event loop keeps serving.
_OFFLOAD_BYTES = 256 * 1024


class Inference:
    def __init__(
        self, repository: ModelRepository, settings: Settings, metrics: Metrics, executor: ThreadPoolExecutor
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self.executor = executor

    async def _maybe_offload(self, size: int, fn, *args):
        if size > _OFFLOAD_BYTES:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        return fn(*args)

    # -- decoding helpers shared by the dialects --------------------------------------------------
    async def parse_json(self, body: bytes) -> Any:
        def parse() -> Any:
            try:
                return orjson.loads(body)
            # orjson.JSONDecodeError (a ValueError) covers bad syntax, bad UTF-8, deep nesting and
            # integers beyond 64 bits; RecursionError is kept for safety.
            except (ValueError, RecursionError) as exc:
                hint = " (NaN and Infinity are not JSON numbers)" if b"NaN" in body or b"Infinity" in body else ""
                raise InvalidInput(f"malformed JSON{hint}: {exc}") from None

        if not body:
            raise InvalidInput("empty request body; expected JSON")
        return await self._maybe_offload(len(body), parse)

    async def decode_images(self, model: ModelVersion, blobs: list[bytes], polarity: Polarity) -> np.ndarray:
        """Encoded image files → validated model input batch."""
        if len(blobs) > self.settings.max_images_per_request:
            raise InvalidInput(
                f"{len(blobs)} images in one request exceeds the limit of {self.settings.max_images_per_request}"
            )
        height, width = model.input_shape[:2]

        def decode() -> np.ndarray:
            return images_to_batch(blobs, height, width, polarity=polarity, max_pixels=self.settings.max_image_pixels)

        return await self._maybe_offload(sum(map(len, blobs)), decode)

    def check_tensor(self, model: ModelVersion, array: np.ndarray) -> np.ndarray:
        return validate_tensor(array, model.input_shape, max_images=self.settings.max_images_per_request)

    def admit(self, name: str, version: int | str | None) -> ModelVersion:
        """The ready model version for a classification request, refused with 503 if its queue is full."""
        model = self.repository.get(name, version)
        model.batcher.admit()
        return model

    # -- inference -----------------------------------------------------------------------------------
    async def classify(self, model: ModelVersion, images: np.ndarray, api: str) -> np.ndarray:
        """Class probabilities ``(n, classes)`` through the model's batcher."""
        probabilities = await model.batcher.submit(images)
        self.metrics.images.labels(model.label, api).inc(len(images))
        return probabilities

    async def feature_maps(self, model: ModelVersion, images: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        """Activations of the named layers, run in a worker thread (not batched)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, model.feature_maps, images, layers)


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[tuple[int, str, float]]:
    """The k most probable classes of one probability vector, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), class_names[int(i)], float(probabilities[i])) for i in order]
