"""Shadow versions: a share of the default route's classifications also runs on a candidate version, after
the live answer is on its way, and the two answers are compared.

The pipeline asks :meth:`ShadowRunner.sample` once it knows the live version. A sampled request keeps its
validated model input. Once the request has been answered, it goes to :meth:`ShadowRunner.offer`, which
puts it on a bounded queue (``CNN_SHADOW_QUEUE_IMAGES``). A full queue drops it, and the drop is
counted. A background task takes what the queue holds over 0.1 s and runs it on the shadow version's
own batcher as one call (in its thread, never on the event loop): a few larger calls take less from
the live model, which shares the cores, than one call per request. It records, per (model, live
version, shadow version): requests and images compared, top-1 agreements, the confusion of live against
shadow top-1 classes, and the shadow's latency (its call's). Nothing here can delay or fail a live
request.

A shadow compares like with like. Its input shape and its number of classes must be the live version's;
a request it cannot take is dropped as ``incompatible`` (logged once per pair).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from service.core.errors import InferenceFailed, ServiceError
from service.core.metrics import Metrics
from service.core.request import InferenceResult, Operation, Target
from service.hosting.table import ModelTable, VersionRef
from service.hosting.versions import VersionRecord

logger = logging.getLogger(__name__)

_WINDOW_S = 0.1  # the queue's requests over this long run on the shadow as one call ...
_WINDOW_IMAGES = 64  # ... of at most about this many images
_LATENCIES_KEPT = 1024  # the most recent shadow latencies, for the percentiles shown


@dataclass(slots=True)
class Mirror:
    """A live request chosen for the shadow: the version that answered it, and (once answered) the model
    input it ran on and the probabilities its client got."""

    model: str
    live_version: int
    shadow_ref: VersionRef
    inputs: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    @property
    def images(self) -> int:
        return 0 if self.inputs is None else len(self.inputs)


@dataclass(eq=False)
class Comparison:
    """What a shadow version has shown so far against one live version."""

    model: str
    live_version: int
    shadow_version: int
    class_names: list[str]
    requests: int = 0
    predictions: int = 0
    agreements: int = 0
    confusion: np.ndarray = field(init=False)  # (classes, classes): rows the live top-1, columns the shadow's
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCIES_KEPT))

    def __post_init__(self) -> None:
        classes = len(self.class_names)
        self.confusion = np.zeros((classes, classes), dtype=np.int64)

    def add(self, live: np.ndarray, shadow: np.ndarray, seconds: float) -> int:
        """Count one request's images (probabilities of each version); returns the agreements."""
        live_top, shadow_top = live.argmax(axis=1), shadow.argmax(axis=1)
        np.add.at(self.confusion, (live_top, shadow_top), 1)
        agreed = int(np.count_nonzero(live_top == shadow_top))
        self.requests += 1
        self.predictions += len(live_top)
        self.agreements += agreed
        self.latencies.append(seconds)
        return agreed


class ShadowRunner:
    def __init__(self, table: ModelTable, metrics: Metrics, max_queue_images: int) -> None:
        self.table = table
        self.metrics = metrics
        self.max_queue_images = max_queue_images
        self.comparisons: dict[tuple[str, int, int], Comparison] = {}
        self.dropped: dict[str, Counter[str]] = {}  # by model, then reason
        self._queue: asyncio.Queue[Mirror] | None = None
        self._queued_images = 0
        self._workers: list[asyncio.Task] = []
        self._told: set[tuple[str, int, int]] = set()

    # -- the live request's side -----------------------------------------------------------------------
    def sample(self, target: Target, live: VersionRecord) -> Mirror | None:
        """A mirror of this request when its model has a shadow and this request is in its share: a
        classification on the default route, answered by another version than the shadow."""
        if target.version is not None or target.operation is not Operation.classify:
            return None
        rollout = self.table.rollouts.get(target.model)
        if rollout is None or rollout.shadow is None or not rollout.shadow.take():
            return None
        mirror = Mirror(live.name, live.version, rollout.shadow.ref)
        try:
            shadow = self.table.ready(live.name, mirror.shadow_ref)
        except ServiceError:
            self._drop(mirror, "unavailable")
            return None
        return mirror if shadow.version != live.version else None

    def offer(self, mirror: Mirror, result: InferenceResult) -> None:
        """Queue an answered request for its shadow; dropped (counted) when the queue is full."""
        mirror.inputs, mirror.probabilities = result.model_input, result.probabilities
        if mirror.inputs is None or mirror.probabilities is None:
            return
        if self._queued_images + mirror.images > self.max_queue_images:
            self._drop(mirror, "queue_full")
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._workers = [asyncio.create_task(self._work(), name="shadow")]
        self._queued_images += mirror.images
        self._queue.put_nowait(mirror)

    async def stop(self) -> None:
        """Shutting down: queued comparisons are dropped, running ones cancelled."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def of_model(self, name: str) -> list[Comparison]:
        """The model's comparisons, newest live and shadow versions first."""
        found = [c for (model, _, _), c in self.comparisons.items() if model == name]
        return sorted(found, key=lambda c: (-c.live_version, -c.shadow_version))

    # -- the background side ------------------------------------------------------------------------
    async def _work(self) -> None:
        """Take what the queue holds over ``_WINDOW_S`` (up to ``_WINDOW_IMAGES``) and run it as one call
        per shadow version: a few larger calls contend less with the live model's than one per request."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            window = [await self._queue.get()]
            closes, images = loop.time() + _WINDOW_S, window[0].images
            self._queued_images -= images
            while images < _WINDOW_IMAGES and (left := closes - loop.time()) > 0:
                try:
                    window.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
                images += window[-1].images
                self._queued_images -= window[-1].images
            groups: dict[tuple[str, VersionRef], list[Mirror]] = {}
            for mirror in window:
                groups.setdefault((mirror.model, mirror.shadow_ref), []).append(mirror)
            for (model, ref), mirrors in groups.items():
                try:
                    await self._compare(model, ref, mirrors)
                except Exception:  # a shadow's failure is its own: log it, count it, go on
                    logger.exception("shadow comparison failed on model %s", model)
                    for mirror in mirrors:
                        self._drop(mirror, "failed")

    async def _compare(self, model: str, ref: VersionRef, mirrors: list[Mirror]) -> None:
        """Run the mirrors of one model on its shadow version in one call, and record each comparison."""
        try:
            with self.table.hold(model, ref) as shadow:
                taken = [m for m in mirrors if m.live_version != shadow.version]
                for mirror in [m for m in taken if not self._compatible(m, shadow)]:
                    self._drop(mirror, "incompatible")
                    taken.remove(mirror)
                if not taken:
                    return
                started = time.perf_counter()
                inputs = np.concatenate([m.inputs for m in taken]) if len(taken) > 1 else taken[0].inputs
                outputs = await shadow.batcher.submit(inputs, background=True)
                seconds = time.perf_counter() - started
        except ServiceError as exc:
            for mirror in mirrors:
                self._drop(mirror, "failed" if isinstance(exc, InferenceFailed) else "unavailable")
            return
        row = 0
        for mirror in taken:
            self._record(mirror, shadow, outputs[row : row + mirror.images], seconds)
            row += mirror.images

    def _record(self, mirror: Mirror, shadow: VersionRecord, outputs: np.ndarray, seconds: float) -> None:
        assert mirror.probabilities is not None and shadow.card is not None
        key = (mirror.model, mirror.live_version, shadow.version)
        comparison = self.comparisons.get(key)
        if comparison is None:
            comparison = self.comparisons[key] = Comparison(*key, list(shadow.card.class_names))
        agreed = comparison.add(mirror.probabilities, outputs, seconds)
        labels = (mirror.model, str(mirror.live_version), str(shadow.version))
        self.metrics.shadow_requests.labels(*labels).inc()
        self.metrics.shadow_predictions.labels(*labels).inc(mirror.images)
        self.metrics.shadow_agreements.labels(*labels).inc(agreed)
        self.metrics.shadow_seconds.labels(mirror.model, labels[2]).observe(seconds)

    def _compatible(self, mirror: Mirror, shadow: VersionRecord) -> bool:
        assert mirror.inputs is not None and mirror.probabilities is not None and shadow.card is not None
        card = shadow.card
        same = (
            tuple(card.input_shape) == mirror.inputs.shape[1:]
            and len(card.class_names) == (mirror.probabilities.shape[1])
        )
        pair = (mirror.model, mirror.live_version, shadow.version)
        if not same and pair not in self._told:
            self._told.add(pair)
            logger.warning(
                "model %s: shadow version %d cannot be compared with version %d: it takes %s input with %d "
                "classes, the live version %s input with %d", mirror.model, shadow.version, mirror.live_version,
                list(card.input_shape), len(card.class_names), list(mirror.inputs.shape[1:]),
                mirror.probabilities.shape[1],
            )  # fmt: skip
        return same

    def _drop(self, mirror: Mirror, reason: str) -> None:
        self.dropped.setdefault(mirror.model, Counter())[reason] += 1
        self.metrics.shadow_dropped.labels(mirror.model, reason).inc()
