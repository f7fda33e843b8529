"""The one data plane: every inference request, REST or gRPC, goes through :meth:`InferencePipeline.handle`.

A transport names the model version (a :class:`~service.core.request.Target`, from the path or the
message), says how to read the body, and hands over its dialect's pure ``decode`` and ``encode``;
everything in between happens here, top to bottom:

1. look up the ready model version once (404 unknown, 503 not ready) and hold it: an unload waits for
   the request to finish; a classification is refused at once when the model's queue is full (503);
2. read the body, and decode it into an :class:`~service.core.request.InferenceRequest` (in a worker
   thread when it is large);
3. check the request against the model's signature: input name, outputs, layers;
4. check the image count against the limits, before any pixel is converted;
5. turn images or tensors into the validated model input (in a thread if large);
6. classify through the model's batcher (admission, batching, timeouts), or compute feature maps or an
   explanation (bounded: images per request, and concurrent calls shared by both);
7. count the images, and encode the :class:`~service.core.request.InferenceResult` (in a thread if large);
8. when the model has a shadow version and this request is in its share, hand the answered request to
   :class:`~service.inference.shadow.ShadowRunner`, and when payload logging samples it, to
   :class:`~service.inference.payload_log.PayloadLogger` (both work in the background).

With tracing on, each step is a span (:mod:`service.core.tracing`); the access line's record
(:mod:`service.core.logs`) learns the version that answered and the images it ran.

The version a request names, or else its model's traffic split, or else the default version, answers
(:meth:`~service.hosting.table.ModelTable.hold`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np
from prometheus_client import Counter

from contract import ModelCard
from service.core import logs, tracing
from service.core.errors import (
    ClientGone,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from service.core.metrics import Metrics
from service.core.request import (
    Api,
    ExplainMethod,
    ExplainSpec,
    InferenceRequest,
    InferenceResult,
    Operation,
    Polarity,
    Target,
)
from service.core.settings import Settings
from service.hosting.explain import gradcam_layers
from service.hosting.table import ModelTable
from service.hosting.versions import VersionRecord
from service.inference.payload_log import PayloadLogger
from service.inference.preprocess import images_to_batch, read_headers, tensor_to_batch
from service.inference.shadow import ShadowRunner

logger = logging.getLogger(__name__)

T = TypeVar("T")
W = TypeVar("W")
# How a transport reads a request's body: the body as its decode takes it, and the bytes its decode parses
# (a body's size, less a v2 binary part; a gRPC message's, nothing when it sends raw contents: both are taken
# as they are).
Reader = Callable[[], Awaitable[tuple[W, int]]]
# What returns when the request's client has gone away (long work for it then stops).
Gone = Callable[[], Awaitable[None]]

# Bodies and messages with more than this to parse are decoded in a worker thread (a JSON body of one image
# is ~6 KB); image files whose pixels, and answers, larger than the next are decoded or encoded there; tensors
# of more values than the last are converted there when they are lists (JSON) or typed protobuf contents: the
# event loop keeps serving.
_OFFLOAD_PARSE_BYTES = 16 * 1024
_OFFLOAD_BYTES = 256 * 1024
_OFFLOAD_ELEMENTS = 32 * 1024


class InferencePipeline:
    def __init__(self, table: ModelTable, settings: Settings, metrics: Metrics, executor: Executor) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics
        self.executor = executor
        self._heavy_slots = asyncio.Semaphore(settings.max_concurrent_feature_maps)
        self.shadows = ShadowRunner(table, metrics, settings.shadow_queue_images)
        self.payloads = PayloadLogger(settings, metrics)
        self._image_counters: dict[tuple[str, Api], Counter] = {}

    async def handle(
        self,
        target: Target,
        read: Reader[W],
        decode: Callable[[W], InferenceRequest],
        encode: Callable[[InferenceResult], T],
        gone: Gone | None = None,
    ) -> T:
        """Admit, read, decode, run and encode one request (errors raise :class:`~service.core.errors.ServiceError`).

        ``gone`` returns when the client has gone away: long image decoding then stops.
        """
        seen = logs.current()  # the access line's record, when one is written
        with self.table.hold(target.model, target.version, target.routing_key) as record:  # not unloaded until done
            if seen is not None:
                seen.model, seen.version = record.name, record.version
            if target.operation is Operation.classify:
                record.batcher.admit()  # an early 503, before the body is read
            with tracing.step("decode"):  # reading the body, then decoding it
                wire, size = await read()
                request = await self._call(size > _OFFLOAD_PARSE_BYTES, decode, wire)
            del wire
            if seen is not None:
                seen.api, seen.images = request.api.value, request.count
            mirror = self.shadows.sample(target, record)
            logged = self.payloads.sample(target, request)
            result = await self.run(request, record, gone)
        with tracing.step("encode"):
            answer = await self._call(result.nbytes > _OFFLOAD_BYTES, encode, result)
        if mirror is not None:
            self.shadows.offer(mirror, result)
        if logged is not None:
            self.payloads.offer(logged, result, seen)
        return answer

    async def run(self, request: InferenceRequest, record: VersionRecord, gone: Gone | None = None) -> InferenceResult:
        """Run a decoded request on a held version."""
        model, card = record.loaded, record.card
        layers = _checked_outputs(request, card, record.name)
        spec = _checked_explain(request, card, record.name)
        self._check_count(request)
        images = await self._model_input(request, card, gone)
        if request.operation is Operation.classify:
            probabilities = await record.batcher.submit(images)
            result = InferenceResult(
                request, record.name, record.version, card, probabilities=probabilities, model_input=images
            )
        elif spec is not None:
            explanation = await self._bounded(record.key, "explain", model.explain, images, spec)
            result = InferenceResult(request, record.name, record.version, card, explanation=explanation)
        else:
            activations = await self._bounded(record.key, "feature maps", model.feature_maps, images, layers)
            result = InferenceResult(request, record.name, record.version, card, activations=activations)
        self._images_counter(record.key, request.api).inc(len(images))
        return result

    def _images_counter(self, key: str, api: Api) -> Counter:
        """The images counter of a version and API, looked up once (``labels`` takes a lock and builds a key)."""
        counter = self._image_counters.get((key, api))
        if counter is None:
            counter = self._image_counters[key, api] = self.metrics.images.labels(key, api)
        return counter

    # -- steps -------------------------------------------------------------------------------------
    def _check_count(self, request: InferenceRequest) -> None:
        if request.operation is Operation.classify:
            limit, what = self.settings.max_images_per_request, ""
        else:
            limit, what = self.settings.max_feature_map_images, f" for {request.operation.value.replace('_', ' ')}"
        if request.count > limit:
            raise PayloadTooLarge(f"{request.count} images in one request exceeds the limit of {limit}{what}")

    async def _model_input(self, request: InferenceRequest, card: ModelCard, gone: Gone | None) -> np.ndarray:
        """The validated model input. The request lets go of its input here: a JSON tensor is hundreds of
        lists per image, and keeping them alive while the request waits for its batch makes every garbage
        collection scan them."""
        blobs, tensor = request.images, request.tensor
        request.images = request.tensor = None
        if blobs is not None:
            return await self._decoded(blobs, card, request.polarity, gone)
        if tensor is None:
            raise InvalidInput("no images in the request")
        # Lists and typed protobuf contents are converted value by value; bytes and arrays only checked.
        big = not isinstance(tensor.values, bytes | np.ndarray) and tensor.elements > _OFFLOAD_ELEMENTS
        return await self._call(big, tensor_to_batch, tensor, card.input_shape)

    async def _decoded(self, blobs: list[bytes], card: ModelCard, polarity: Polarity, gone: Gone | None) -> np.ndarray:
        """Decode image files: in a worker thread when they are large once decoded (judged from their
        headers, or from their encoded size when that is already large), within the request timeout. When
        the timeout passes or the client goes, the images not yet begun are left undecoded."""
        s = self.settings
        height, width = card.input_shape[:2]
        small = sum(map(len, blobs)) <= _OFFLOAD_BYTES  # then its headers are read here, each file once
        images, cost = await self._call(not small, read_headers, blobs, s.max_image_pixels, s.max_request_pixels)
        if small and cost <= _OFFLOAD_BYTES:
            return images_to_batch(images, height, width, polarity=polarity)
        stop = threading.Event()
        decoding = asyncio.ensure_future(
            self._call(True, images_to_batch, images, height, width, polarity=polarity, stop=stop)
        )
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        done: set[asyncio.Future] = set()
        try:
            done, _ = await asyncio.wait(
                [decoding, *([watcher] if watcher else [])], timeout=s.request_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        finally:  # timed out, the client gone, or this call cancelled (a gRPC client's cancel)
            if decoding not in done:
                stop.set()
                decoding.cancel()
            if watcher is not None:
                watcher.cancel()
        if decoding in done:
            return decoding.result()
        if watcher is not None and watcher in done:
            raise ClientGone("the client went away while its images were decoded")
        raise InferenceTimeout(f"decoding the images took longer than {s.request_timeout_s:g} s")

    async def _bounded(self, key: str, what: str, fn: Callable[..., T], *args) -> T:
        """Feature maps or an explanation in a worker thread, at most ``max_concurrent_feature_maps``
        such calls at once."""
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                await self._heavy_slots.acquire()
        except TimeoutError:
            raise Overloaded(f"{what} calls on {key} are all busy; retry shortly") from None
        future = asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        future.add_done_callback(lambda _: self._heavy_slots.release())  # when the thread is done, not before
        try:
            return await asyncio.shield(future)
        except Exception:
            logger.exception("%s failed on %s", what, key)
            raise InferenceFailed(f"{what} failed on model {key}") from None

    async def _call(self, offload: bool, fn: Callable[..., T], *args, **kwargs) -> T:
        if not offload:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))


def _checked_outputs(request: InferenceRequest, card: ModelCard, name: str) -> list[str]:
    """Check the names the client used against the signature; return the feature layers to compute."""
    if request.input_name is not None and request.input_name != card.input.name:
        raise InvalidInput(f"unknown input {request.input_name!r}; the model's only input is {card.input.name!r}")
    if request.operation is Operation.classify:
        for output in request.outputs or ():
            if output != card.output.name:
                raise InvalidInput(f"unknown output {output!r}; the model's output is {card.output.name!r}")
        return []
    if request.outputs is None:
        return card.feature_layers
    unknown = [layer for layer in request.outputs if layer not in card.feature_layers]
    if unknown:
        raise NotFound(f"model {name} has no layer {unknown[0]!r}; layers: {', '.join(card.feature_layers)}")
    return list(request.outputs)


def _checked_explain(request: InferenceRequest, card: ModelCard, name: str) -> ExplainSpec | None:
    """For an explain request, check what to explain against the model: Grad-CAM's layer, the target
    class, occlusion's patch; return the spec."""
    if request.operation is not Operation.explain:
        return None
    spec = request.explain or ExplainSpec()
    classes = len(card.class_names)
    if spec.target is not None and not 0 <= spec.target < classes:
        raise InvalidInput(f"target class {spec.target} is out of range; model {name} has classes 0–{classes - 1}")
    if spec.method is not ExplainMethod.gradcam:
        if spec.layer is not None:
            raise InvalidInput(f"'layer' applies to method gradcam only, not {spec.method.value}")
        side = min(card.input_shape[:2])
        if spec.method is ExplainMethod.occlusion and not 1 <= spec.stride <= spec.patch_size <= side:
            raise InvalidInput(
                f"occlusion needs 1 ≤ stride ≤ patch_size ≤ {side}, got patch_size {spec.patch_size}, "
                f"stride {spec.stride}"
            )
        return spec
    valid = gradcam_layers(card)
    if not valid:
        raise InvalidInput(f"model {name} has no convolutional layer for Grad-CAM; use saliency or occlusion")
    if spec.layer is None:
        return spec  # the explainer takes the default layer
    if spec.layer not in card.feature_layers:
        raise NotFound(f"model {name} has no layer {spec.layer!r}; Grad-CAM layers: {', '.join(valid)}")
    if spec.layer not in valid:
        raise InvalidInput(
            f"layer {spec.layer!r} has no spatial map after a convolution; Grad-CAM layers of {name}: "
            f"{', '.join(valid)}"
        )
    return spec
