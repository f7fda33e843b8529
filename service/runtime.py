"""The runtime: which model versions are served, their batchers and the inference threads.

:meth:`Runtime.start` configures TensorFlow, loads and warms up the versions each model's version
policy selects, and, when ``CNN_POLL_INTERVAL_S`` > 0, re-runs :meth:`Runtime.sync` at that interval:
new versions are loaded, removed or deselected ones unloaded, the config file re-read when it changed.
Everything that serves a request looks models up here.

A swap never fails a request:

1. the new version loads and warms up (in the loader thread) while the old one serves;
2. it becomes AVAILABLE with its own batcher; the default version (and ``latest`` labels) move to it;
3. an old version the policy no longer selects goes UNLOADING: lookups skip it, requests that already
   hold it (:meth:`Runtime.hold`) finish, its batcher drains, and it is released (END).

A version that fails to load is END with its error while the previous one keeps serving; it is retried
when its files change. The repository API's explicit unload holds a model unloaded until its
directory changes; an explicit load applies its version policy at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Iterator, KeysView
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from contract import ModelCard
from service import engines
from service.batcher import Batcher
from service.errors import InvalidInput, ModelLoadFailed, ModelNotReady, NotFound
from service.metrics import Metrics
from service.model_config import ConfigError, LabelTarget, ModelSource, read_config, repository_sources
from service.precision import StartupError, check_supported
from service.repository import ModelRepository, ModelVersion, VersionState, load_version
from service.scan import Fingerprint, VersionDir, scan_versions
from service.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Allocations between young collections, then young collections per middle one, middle per full one.
GC_THRESHOLDS = (20_000, 20, 20)
# Inference threads per batcher slot: room for several models, each swapping two versions. Threads
# start on demand, and each batcher bounds its own concurrent calls.
_THREADS_PER_SLOT = 8
# Threads beside the model-call slots: decoding large bodies and images, encoding large answers.
_SPARE_THREADS = 2
_MAX_TRANSITIONS = 20  # state changes kept per version record
# A model's directory as last seen: each version's files.
ModelPrint = tuple[tuple[int, Fingerprint], ...]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A version that is ready to answer, with its batcher."""

    version: ModelVersion
    batcher: Batcher

    @property
    def card(self) -> ModelCard:
        return self.version.loaded_card


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.repository = ModelRepository()
        self.executor: ThreadPoolExecutor | None = None
        self.started = False
        self._loader: ThreadPoolExecutor | None = None  # one thread: scans and loads, one at a time
        self._served: dict[str, ServedModel] = {}
        self._sources: dict[str, ModelSource] = {}
        self._config_stamp: tuple[int, int] | None = None  # the config file's (size, mtime) when read
        self._config_error: str | None = None  # the last problem reading it (logged once)
        self._seen: dict[str, Fingerprint] = {}  # each version directory's files at the previous scan
        self._held: dict[str, ModelPrint | None] = {}  # unloaded on request: the directory at that time
        self._label_overrides: dict[str, dict[str, LabelTarget | None]] = {}  # set through the API
        self._label_warnings: set[tuple[str, str, LabelTarget]] = set()
        self._sync_lock = asyncio.Lock()
        self._synced_once = False
        self._watcher: asyncio.Task | None = None

    # -- start and stop ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load what the policies select (readiness waits for this), then watch the repository."""
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        await self._in_loader(_configure_tensorflow, self.settings)
        try:
            await self._in_loader(check_supported, self.settings.plan_options, engines.unsupported_reason)
        except StartupError as exc:
            logger.error("cannot start: %s", exc)
            raise
        slots = self.settings.max_concurrent_batches * _THREADS_PER_SLOT + self.settings.max_concurrent_feature_maps
        self.executor = ThreadPoolExecutor(max_workers=slots + _SPARE_THREADS, thread_name_prefix="inference")
        await self.sync()
        _tune_gc()
        self.started = True
        ready = [m.label for m in self.repository.all_versions() if self.is_ready(m)]
        logger.info("serving %d model version(s): %s", len(ready), ", ".join(ready) or "none")
        if self.settings.poll_interval_s > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="repository-watcher")

    async def stop(self) -> None:
        """Stop watching, refuse new work, let queued requests finish (up to the request timeout), join
        the threads."""
        self.started = False
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        served = list(self._served.values())
        await asyncio.gather(*(s.batcher.drain(self.settings.request_timeout_s) for s in served))
        for pool in (self.executor, self._loader):
            if pool is not None:
                pool.shutdown(wait=True)
        logger.info("stopped")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.sync()
            except Exception:  # a bad poll must not end the watching
                logger.exception("repository poll failed")

    # -- reconciling with the repository ------------------------------------------------------------
    async def sync(self, only: str | None = None, *, trust_files: bool = False) -> None:
        """Bring the served versions in line with the repository, the config file and the policies.

        ``only`` limits the pass to one model. ``trust_files`` loads complete directories without
        waiting for a second scan to show them settled (an explicit load request).
        """
        async with self._sync_lock:
            sources = await self._read_sources()
            chosen = [s for s in sources if only in (None, s.name)]
            scans = await self._in_loader(lambda: {s.name: scan_versions(s.base_path) for s in chosen})
            for source in chosen:
                await self._sync_model(source, scans[source.name], trust_files or not self._synced_once)
            if only is None:
                for name in set(self.repository.models) - {s.name for s in sources}:  # dropped from the config
                    for model in self.repository.versions(name):
                        if model.state is VersionState.AVAILABLE:
                            await self._retire(model)
                    self._count_states(name)
            self._synced_once = True

    async def _read_sources(self) -> list[ModelSource]:
        """The models to serve: the config file (re-read when it changed) or the repository's directories.

        At start a bad config is an error; later it is logged and the last good one stays in force.
        """
        path = self.settings.model_config_file
        try:
            if path is None:
                found = await self._in_loader(
                    repository_sources, self.settings.model_repository, self.settings.models, self.settings.policy
                )
            else:
                stamp = await self._in_loader(_stamp, path)
                if stamp == self._config_stamp:
                    return list(self._sources.values())
                found = await self._in_loader(read_config, path)
                if self._synced_once:
                    logger.info("model config %s changed: %d model(s); label changes made through the API are "
                                "dropped", path, len(found))  # fmt: skip
                    self._label_overrides.clear()
                self._config_stamp = stamp
        except ConfigError as exc:
            if not self._synced_once:
                raise
            if str(exc) != self._config_error:  # once per distinct problem, not on every poll
                logger.error("%s; keeping the previous model list", exc)
            self._config_error = str(exc)
            return list(self._sources.values())
        self._config_error = None
        self._sources = {source.name: source for source in found}
        return found

    async def _sync_model(self, source: ModelSource, dirs: dict[int, VersionDir], trust_files: bool) -> None:
        name, policy = source.name, source.model_version_policy
        versions = self.repository.models.setdefault(name, {})
        model_print: ModelPrint = tuple((v, d.fingerprint) for v, d in sorted(dirs.items()))
        if name in self._held:
            if self._held[name] is None:
                self._held[name] = model_print
            elif self._held[name] != model_print:
                logger.info("model %s: its directory changed since it was unloaded; its version policy applies", name)
                del self._held[name]
        held = name in self._held

        loadable: dict[int, VersionDir] = {}
        waiting: set[int] = set()  # directories not complete or still changing
        for version, found in dirs.items():
            previous = self._seen.get(str(found.path))
            # Settled: unchanged since the last scan, or complete when first seen (published by rename).
            settled = trust_files or previous == found.fingerprint or (previous is None and found.complete)
            self._seen[str(found.path)] = found.fingerprint
            if _failed(versions.get(version), found):
                continue
            if found.complete and settled:
                loadable[version] = found
            else:
                waiting.add(version)
        present = {str(d.path) for d in dirs.values()}
        for path in [p for p in self._seen if p.startswith(f"{source.base_path}{os.sep}") and p not in present]:
            del self._seen[path]

        pending = set() if held else policy.select(set(loadable) | waiting) - set(loadable)
        for version in pending:
            if version not in versions or versions[version].state is VersionState.END:
                versions[version] = ModelVersion(name, version, dirs[version].path)
        while True:  # load what the policy selects; a failure drops out, and the policy picks again
            aspired = set() if held else policy.select(v for v in loadable if not _failed(versions.get(v), loadable[v]))
            missing = [v for v in sorted(aspired, reverse=True) if not _up(versions.get(v))]
            if not missing:
                break
            for version in missing:
                await self._activate(name, loadable[version])
        for model in list(versions.values()):
            if model.state is VersionState.AVAILABLE and model.version not in aspired:
                await self._retire(model)
            elif model.state is VersionState.START and model.version not in pending:
                del versions[model.version]  # never loaded, and no longer wanted (or gone)
        self._apply_labels(name, source)
        self._count_states(name)

    async def _activate(self, name: str, found: VersionDir) -> None:
        """Load and warm up a version, then give it a batcher and make it AVAILABLE."""
        versions = self.repository.models[name]
        model = versions.get(found.version)
        if model is None or model.state is not VersionState.START:
            model = versions[found.version] = ModelVersion(name, found.version, found.path)
        model.path, model.fingerprint, model.card = found.path, found.fingerprint, None
        self._enter(model, VersionState.LOADING)
        error = await self._in_loader(load_version, model, self.settings.plan_options)
        if error is not None:
            self.metrics.loads.labels(name, "failure").inc()
            self._enter(model, VersionState.END, error)
            return
        batcher = Batcher(
            model.label, model.predict, self.executor, self.metrics,
            max_batch_size=self.settings.max_batch_size,
            max_concurrent_batches=self.settings.max_concurrent_batches,
            max_wait_s=self.settings.max_batch_wait_ms / 1000,
            max_queue_images=self.settings.max_queue_images,
            queue_timeout_s=self.settings.queue_timeout_s,
            request_timeout_s=self.settings.request_timeout_s,
            pad_targets=model.pad_targets,
        )  # fmt: skip
        batcher.start()
        self._served[model.label] = ServedModel(model, batcher)
        self.metrics.loads.labels(name, "success").inc()
        self.metrics.load_seconds.labels(name).observe(model.load_seconds)
        self.metrics.warmup_seconds.labels(name).observe(model.warmup_seconds)
        self._enter(model, VersionState.AVAILABLE)
        logger.info("model %s loaded in %.2f s, warmed up in %.2f s", model.label, model.load_seconds,
                    model.warmup_seconds)  # fmt: skip

    async def _retire(self, model: ModelVersion) -> None:
        """UNLOADING: no new lookups; wait for the requests holding it and for its batcher, release it."""
        self._enter(model, VersionState.UNLOADING)
        labels = self.repository.labels.get(model.name, {})
        for label in [label for label, target in labels.items() if target == model.version]:
            logger.warning("label %s of model %s is dropped: version %d is unloading", label, model.name, model.version)
            del labels[label]
        deadline = time.monotonic() + self.settings.request_timeout_s
        while model.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        served = self._served.pop(model.label, None)
        if served is not None:
            await served.batcher.drain(max(0.0, deadline - time.monotonic()))
        model.release()
        self.metrics.unloads.labels(model.name).inc()
        self.metrics.forget_version(model.label)
        self._enter(model, VersionState.END)
        await self._in_loader(_release_memory)

    def _apply_labels(self, name: str, source: ModelSource) -> None:
        """Point each label of the config (or of the API) at its version, if that one is AVAILABLE; a
        label whose target is not available keeps its previous AVAILABLE version, or is absent."""
        wanted: dict[str, LabelTarget] = dict(source.version_labels)
        for label, target in self._label_overrides.get(name, {}).items():
            if target is None:
                wanted.pop(label, None)
            else:
                wanted[label] = target
        current = self.repository.labels.setdefault(name, {})
        versions = self.repository.models[name]
        for label in [label for label in current if label not in wanted]:
            del current[label]
        for label, target in wanted.items():
            if _points_at_available(versions, target):
                current[label] = target
                continue
            if not _points_at_available(versions, current.get(label)):
                current.pop(label, None)
            if (name, label, target) not in self._label_warnings:
                self._label_warnings.add((name, label, target))
                logger.warning("label %s of model %s wants version %s, which is not available", label, name, target)

    def _enter(self, model: ModelVersion, state: VersionState, error: str | None = None) -> None:
        model.enter(state, error)
        del model.transitions[:-_MAX_TRANSITIONS]
        self._count_states(model.name)

    def _count_states(self, name: str) -> None:
        versions = self.repository.models.get(name, {}).values()
        for state in VersionState:
            self.metrics.versions.labels(name, state.value).set(sum(v.state is state for v in versions))

    async def _in_loader(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._loader, fn, *args)

    # -- explicit control (the repository API) ----------------------------------------------------
    async def load_model(self, name: str) -> None:
        """Apply the model's version policy now (after an unload, too); 400 when nothing could load."""
        self._held.pop(name, None)
        await self.sync(only=name, trust_files=True)
        if name not in self._sources:
            raise NotFound(f"model {name!r} is not in the model repository (or the model config)")
        versions = self.repository.versions(name)
        if not any(self.is_ready(v) for v in versions):
            errors = "; ".join(f"version {v.version}: {v.error}" for v in versions if v.error)
            raise ModelLoadFailed(f"model {name} could not be loaded: {errors or 'no complete version directory'}")

    async def unload_model(self, name: str) -> None:
        """Unload every version and keep the model unloaded until its directory changes."""
        if name not in self.repository.models:
            raise NotFound(f"model {name!r} not found; available: {', '.join(sorted(self.repository.models))}")
        self._held[name] = None
        await self.sync(only=name)

    def set_label(self, name: str, label: str, target: LabelTarget | None) -> None:
        """Point ``label`` at an AVAILABLE version (or ``latest``), or remove it (``None``); this holds
        until the config file changes."""
        self.repository.versions(name)  # the 404 for an unknown model
        if target is None:
            if label not in self.repository.labels.get(name, {}):
                raise NotFound(f"model {name!r} has no label {label!r}")
        elif target != "latest":
            model = self.repository.find(name, target)
            if model.state is not VersionState.AVAILABLE:
                raise InvalidInput(f"version {target} of model {name} is {model.state.value}; a label can point "
                                   "only at an AVAILABLE version")  # fmt: skip
        self._label_overrides.setdefault(name, {})[label] = target
        if name in self._sources:
            self._apply_labels(name, self._sources[name])

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def model_names(self) -> KeysView[str]:
        """The names of every known model (a live view: no copy per request)."""
        return self.repository.models.keys()

    def is_ready(self, model: ModelVersion) -> bool:
        served = self._served.get(model.label)
        return model.state is VersionState.AVAILABLE and served is not None and served.batcher.alive

    def find(self, name: str, version: int | str | None = None) -> ModelVersion:
        """A version by number, label or default, whatever its state; 404 when unknown."""
        return self.repository.find(name, version)

    def served(self, name: str, version: int | str | None = None) -> ServedModel:
        """The version if it is ready to answer; 404 when unknown, 503 when not ready."""
        model = self.repository.find(name, version)
        if not self.is_ready(model):
            detail = f": {model.error}" if model.error else ""
            raise ModelNotReady(f"model {model.label} is {model.state.value}{detail}")
        return self._served[model.label]

    @contextmanager
    def hold(self, name: str, version: int | str | None = None) -> Iterator[ServedModel]:
        """A ready version that is not unloaded until the block ends (an unload waits for it)."""
        served = self.served(name, version)
        served.version.in_flight += 1
        try:
            yield served
        finally:
            served.version.in_flight -= 1

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when started, some version is ready, and every model named in ``CNN_MODELS`` or the
        config file has a ready version (each ``name:version`` entry: that version)."""
        if not self.started:
            return False, {}
        versions = self.repository.all_versions()
        states = {v.label: ("READY" if self.is_ready(v) else v.state.value) for v in versions}
        required = set(self.settings.models) | (set(self._sources) if self.settings.model_config_file else set())
        ready = any(self.is_ready(v) for v in versions) and all(
            any(self.is_ready(v) for v in versions if entry in (v.name, v.label)) for entry in required
        )
        return ready, states


def _failed(model: ModelVersion | None, found: VersionDir) -> bool:
    """It failed to load from exactly these files (a change to them is worth another try)."""
    return model is not None and model.state is VersionState.END and bool(model.error) and (
        model.fingerprint == found.fingerprint
    )  # fmt: skip


def _up(model: ModelVersion | None) -> bool:
    return model is not None and model.state in (VersionState.LOADING, VersionState.AVAILABLE)


def _points_at_available(versions: dict[int, ModelVersion], target: LabelTarget | None) -> bool:
    if target == "latest":
        return True
    return isinstance(target, int) and target in versions and versions[target].state is VersionState.AVAILABLE


def _stamp(path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"model config {path} cannot be read: {exc.strerror}") from None
    return stat.st_size, stat.st_mtime_ns


def _configure_tensorflow(settings: Settings) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import: no C++ info logs
    import tensorflow as tf

    if settings.inference_threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.inference_threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
    logger.info("TensorFlow %s sees devices: %s", tf.__version__, ", ".join(devices))


def _tune_gc() -> None:
    """Loading TensorFlow and the models left ~300k long-lived objects: keep the cyclic garbage collector
    from rescanning them on every full collection under request load. A JSON image allocates ~800
    short-lived lists, so the default young-generation threshold (700) would run a collection per
    request over every in-flight request's objects: raise it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _release_memory() -> None:
    """After an unload: the released SavedModel's objects may sit in the frozen generation (loaded at
    start), where the collector never looks. Unfreeze, collect, and freeze what is still alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
