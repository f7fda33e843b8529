"""The reconciler: brings the model table in line with the repository, the config file and the policies
(and, after each model's labels, its traffic split and shadow).

:meth:`Reconciler.sync` scans each model's base path, applies its version policy, loads and warms up
what is selected (in the loader thread), and retires what is no longer selected. :meth:`_move` is the
one place a version changes state. A swap never fails a request:

1. the new version loads and warms up (in the loader thread) while the old one serves;
2. it becomes AVAILABLE with its own batcher; the default version (and ``latest`` labels) move to it;
3. an old version the policy no longer selects goes UNLOADING: lookups skip it, requests that already
   hold it (:meth:`ModelTable.hold`) finish, its batcher drains, and it is released (END).

A version that fails to load is END with its error while the previous one keeps serving; it is retried
when its files change. The repository API's explicit unload holds a model unloaded until its
directory changes; an explicit load applies its version policy at once (:class:`ModelControl`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from service.core.errors import ModelLoadFailed, NotFound
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.hosting.batcher import Batcher
from service.hosting.labels import LabelBook
from service.hosting.loader import LoadError, load_model
from service.hosting.model_config import LabelTarget, ModelSource, ModelSources, VersionPolicy
from service.hosting.planner import PlanOptions
from service.hosting.rollouts import RolloutBook
from service.hosting.scan import Fingerprint, VersionDir, scan_models
from service.hosting.table import ModelTable
from service.hosting.versions import VersionRecord, VersionState

logger = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_TRANSITIONS = 20  # state changes kept per version record
_TOLD_STATES = (VersionState.UNLOADING, VersionState.END)  # logged at INFO; loading is one line when done
# A model's directory as last seen: each version's files.
ModelPrint = tuple[tuple[int, Fingerprint], ...]


class Reconciler:
    """The table's one writer: loads, swaps and retires versions; labels; the control API."""

    def __init__(self, settings: Settings, metrics: Metrics, table: ModelTable, loader: Executor) -> None:
        self.settings = settings
        self.metrics = metrics
        self.table = table
        self.labels = LabelBook(table)
        self.rollouts = RolloutBook(table)
        self.sources = ModelSources(
            settings.model_config_file,
            settings.model_repository,
            settings.models,
            VersionPolicy.parse(settings.version_policy),
        )
        self._plan_options = PlanOptions.from_settings(settings)
        self._loader = loader  # one thread: scans and loads, one at a time
        self._seen: dict[str, Fingerprint] = {}  # each version directory's files at the previous scan
        self._reported: set[Path] = set()  # odd names under a base path, logged once
        self._held: dict[str, ModelPrint | None] = {}  # unloaded on request: the directory at that time
        self._lock = asyncio.Lock()
        self._synced_once = False

    async def sync(self, only: str | None = None, *, trust_files: bool = False) -> None:
        """One pass over every model (``only``: one model). ``trust_files`` loads complete directories
        without waiting for a second scan to show them settled (an explicit load request)."""
        async with self._lock:
            sources, changed = await self._in_loader(self.sources.read)
            if changed:
                self.labels.forget_overrides()
            self.table.required = set(self.settings.models)
            if self.settings.model_config_file is not None:
                self.table.required |= {source.name for source in sources}
            chosen = [s for s in sources if only in (None, s.name)]
            scans = await self._in_loader(scan_models, {s.name: s.base_path for s in chosen}, self._reported)
            for source in chosen:
                if scans[source.name] is not None:
                    await self._sync_model(source, scans[source.name], trust_files or not self._synced_once)
            if only is None:
                for name in set(self.table.records) - {s.name for s in sources}:  # dropped from the config
                    self.rollouts.forget(name)
                    for record in self.table.versions(name):
                        if record.state is VersionState.AVAILABLE:
                            await self._retire(record)
                    self._count_states(name)
            self._synced_once = True

    async def _sync_model(self, source: ModelSource, dirs: dict[int, VersionDir], trust_files: bool) -> None:
        name, policy = source.name, source.model_version_policy
        versions = self.table.records.setdefault(name, {})
        held = self._still_held(name, tuple((v, d.fingerprint) for v, d in sorted(dirs.items())))
        loadable, waiting = self._settled(source, dirs, versions, trust_files)
        pending = set() if held else policy.select(set(loadable) | waiting) - set(loadable)
        for version in pending:
            if version not in versions or versions[version].state is VersionState.END:
                versions[version] = VersionRecord(name, version, dirs[version].path)
        while True:  # load what the policy selects; a failure drops out, and the policy picks again
            usable = (v for v in loadable if not (v in versions and versions[v].failed_on(loadable[v].fingerprint)))
            aspired = set() if held else policy.select(usable)
            missing = [v for v in sorted(aspired, reverse=True) if not (v in versions and versions[v].up)]
            if not missing:
                break
            for version in missing:
                await self._activate(name, versions, loadable[version])
        for record in list(versions.values()):
            if record.state is VersionState.AVAILABLE and record.version not in aspired:
                await self._retire(record)
            elif record.state is VersionState.START and record.version not in pending:
                del versions[record.version]  # never loaded, and no longer wanted (or gone)
        self.labels.apply(name, source.version_labels)
        self.rollouts.apply(source)
        self._count_states(name)

    def _still_held(self, name: str, model_print: ModelPrint) -> bool:
        """Unloaded through the API, and its directory unchanged since then."""
        if name in self._held:
            if self._held[name] is None:
                self._held[name] = model_print
            elif self._held[name] != model_print:
                logger.info("model %s: its directory changed since it was unloaded; its version policy applies", name)
                del self._held[name]
        return name in self._held

    def _settled(
        self, source: ModelSource, dirs: dict[int, VersionDir], versions: dict[int, VersionRecord], trust_files: bool
    ) -> tuple[dict[int, VersionDir], set[int]]:
        """The directories ready to load, and those not complete or still changing."""
        loadable: dict[int, VersionDir] = {}
        waiting: set[int] = set()
        for version, found in dirs.items():
            previous = self._seen.get(str(found.path))
            # Settled: unchanged since the last scan, or complete when first seen (published by rename).
            settled = trust_files or previous == found.fingerprint or (previous is None and found.complete)
            self._seen[str(found.path)] = found.fingerprint
            if version in versions and versions[version].failed_on(found.fingerprint):
                continue
            if found.complete and settled:
                loadable[version] = found
            else:
                waiting.add(version)
        present = {str(d.path) for d in dirs.values()}
        for path in [p for p in self._seen if p.startswith(f"{source.base_path}{os.sep}") and p not in present]:
            del self._seen[path]
        return loadable, waiting

    async def _activate(self, name: str, versions: dict[int, VersionRecord], found: VersionDir) -> None:
        """Load and warm up a version, then give it a batcher and make it AVAILABLE."""
        record = versions.get(found.version)
        if record is None or record.state is not VersionState.START:
            record = versions[found.version] = VersionRecord(name, found.version, found.path)
        record.path, record.fingerprint = found.path, found.fingerprint
        self._move(record, VersionState.LOADING)
        try:
            loaded = await self._in_loader(load_model, found.path, record.key, self._plan_options)
        except LoadError as exc:
            self.metrics.loads.labels(record.name, "failure").inc()
            self._move(record, VersionState.END, str(exc))
            return
        s = self.settings
        record.loaded, record.card = loaded, loaded.card
        record.batcher = Batcher(
            record.key, loaded.predict, self.metrics, max_batch_size=s.max_batch_size,
            max_concurrent_batches=loaded.plan.concurrent_calls if loaded.plan else 1,
            max_wait_s=s.max_batch_wait_ms / 1000, nice=s.compute_nice,
            max_queue_images=s.max_queue_images, queue_timeout_s=s.queue_timeout_s,
            request_timeout_s=s.request_timeout_s, pad_targets=loaded.pad_targets,
            engine=f"{loaded.plan.runtime}/{loaded.plan.precision}" if loaded.plan else "",
        )  # fmt: skip
        record.batcher.start()
        self.metrics.loads.labels(record.name, "success").inc()
        self.metrics.load_seconds.labels(record.name).observe(loaded.load_seconds)
        self.metrics.warmup_seconds.labels(record.name).observe(loaded.warmup_seconds)
        self._move(record, VersionState.AVAILABLE)
        plan = loaded.plan
        accuracy = f"{plan.accuracy:.2%}" if plan and plan.accuracy is not None else "unrecorded"
        logger.info("model %s serves on %s/%s (%s; test accuracy %s), loaded in %.2f s, engine timed in %.2f s",
                    record.key, plan.runtime if plan else "?", plan.precision if plan else "?",
                    plan.chosen_by if plan else "?", accuracy, loaded.load_seconds, loaded.warmup_seconds)  # fmt: skip

    async def _retire(self, record: VersionRecord) -> None:
        """UNLOADING: no new lookups; wait for the requests holding it and for its batcher, release it."""
        self._move(record, VersionState.UNLOADING)
        self.labels.drop_labels_of(record)
        deadline = time.monotonic() + self.settings.request_timeout_s
        while record.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if record.batcher is not None:
            await record.batcher.drain(max(0.0, deadline - time.monotonic()))
        record.loaded = record.batcher = None
        self.metrics.unloads.labels(record.name).inc()
        self.metrics.forget_version(record.key)
        self._move(record, VersionState.END)
        await self._in_loader(_release_memory)

    async def drain(self) -> None:
        """Shutting down: let every batcher finish its queue (up to the request timeout)."""
        batchers = [r.batcher for r in self.table.all_versions() if r.batcher is not None]
        await asyncio.gather(*(b.drain(self.settings.request_timeout_s) for b in batchers))

    def _move(self, record: VersionRecord, state: VersionState, error: str | None = None) -> None:
        """The one way a version changes state: recorded with its time, logged and counted."""
        record.state, record.error = state, error
        record.transitions.append((state, time.time()))
        del record.transitions[:-_MAX_TRANSITIONS]
        level = logging.WARNING if error else logging.INFO if state in _TOLD_STATES else logging.DEBUG
        logger.log(level, "model %s: %s%s", record.key, state.value, f" ({error})" if error else "")
        self._count_states(record.name)

    def _count_states(self, name: str) -> None:
        versions = self.table.records.get(name, {}).values()
        for state in VersionState:
            self.metrics.versions.labels(name, state.value).set(sum(v.state is state for v in versions))

    async def _in_loader(self, fn: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._loader, fn, *args)

    # -- explicit control (ModelControl) -------------------------------------------------------------
    async def load(self, name: str) -> None:
        """Apply the model's version policy now (after an unload, too); 400 when nothing could load."""
        self._held.pop(name, None)
        await self.sync(only=name, trust_files=True)
        if name not in self.sources.current:
            raise NotFound(f"model {name!r} is not in the model repository (or the model config)")
        versions = self.table.versions(name)
        if not any(v.ready for v in versions):
            errors = "; ".join(f"version {v.version}: {v.error}" for v in versions if v.error)
            raise ModelLoadFailed(f"model {name} could not be loaded: {errors or 'no complete version directory'}")

    async def unload(self, name: str) -> None:
        """Unload every version and keep the model unloaded until its directory changes."""
        self.table.versions(name)  # the 404 for an unknown model
        self._held[name] = None
        await self.sync(only=name)

    def set_label(self, name: str, label: str, target: LabelTarget | None) -> None:
        """Point ``label`` at an AVAILABLE version (or ``latest``), or remove it (``None``); this holds
        until the config file changes."""
        self.labels.override(name, label, target)
        if name in self.sources.current:
            self.labels.apply(name, self.sources.current[name].version_labels)


def _release_memory() -> None:
    """After an unload: the released SavedModel's objects may sit in the frozen generation (loaded at
    start), where the collector never looks. Unfreeze, collect, and freeze what is still alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
