"""The model table: every known model, its versions and labels, read by everything that serves a request.

Routes, gRPC servicers, the protocol views and the pipeline look versions up here and never change
them; :class:`service.hosting.reconciler.Reconciler` is the one writer. A request finds its version
once and holds it (:meth:`ModelTable.hold`) until it is answered, so an unload waits for it.

The default version of a model is its highest AVAILABLE one; a label names one AVAILABLE version (or
``latest``, whichever is the default). A model with a traffic split (:mod:`service.hosting.traffic`)
spreads the requests that name no version over the versions of the split instead.
"""

from __future__ import annotations

from collections.abc import Iterator, KeysView
from contextlib import contextmanager

from service.core.errors import ModelNotReady, NotFound
from service.hosting.model_config import LabelTarget
from service.hosting.traffic import Rollout, VersionRef
from service.hosting.versions import VersionRecord, VersionState


class ModelTable:
    def __init__(self) -> None:
        # Written by the reconciler only.
        self.records: dict[str, dict[int, VersionRecord]] = {}
        self.labels: dict[str, dict[str, LabelTarget]] = {}
        self.rollouts: dict[str, Rollout] = {}  # each model's traffic split and shadow, when it has them
        self.required: set[str] = set()  # models (``name`` or ``name:version``) readiness waits for
        self.started = False

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def names(self) -> KeysView[str]:
        """The names of every known model (a live view: no copy per request)."""
        return self.records.keys()

    def all_versions(self) -> list[VersionRecord]:
        return [v for versions in self.records.values() for v in versions.values()]

    def versions(self, name: str) -> list[VersionRecord]:
        """A model's versions, newest first; 404 when the model is unknown."""
        return sorted(self._versions(name).values(), key=lambda v: -v.version)

    def version_numbers(self, name: str) -> list[int]:
        return sorted(self._versions(name))

    def default(self, name: str) -> VersionRecord:
        versions = self._versions(name)
        if not versions:
            raise NotFound(f"model {name!r} has no versions")
        available = [v for v in versions.values() if v.state is VersionState.AVAILABLE]
        return max(available or versions.values(), key=lambda v: v.version)

    def find(self, name: str, ref: VersionRef = None) -> VersionRecord:
        """A version by number, by label (a string), or the default one (``None``), whatever its state;
        404 when unknown."""
        versions = self._versions(name)
        if ref is None:
            return self.default(name)
        if isinstance(ref, str):
            labels = self.labels.get(name, {})
            if ref not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise NotFound(f"model {name!r} has no label {ref!r}; labels: {known}")
            target = labels[ref]
            return self.default(name) if target == "latest" else versions[target]
        if ref not in versions:
            raise NotFound(f"model {name!r} has no version {ref}; versions: {sorted(versions)}")
        return versions[ref]

    def label_versions(self, name: str) -> dict[str, int]:
        """Each label of the model and the version it names now."""
        return {label: self.find(name, label).version for label in self.labels.get(name, {})}

    def ready(self, name: str, ref: VersionRef = None) -> VersionRecord:
        """The version if it is ready to answer; 404 when unknown, 503 when not ready."""
        record = self.find(name, ref)
        if not record.ready:
            detail = f": {record.error}" if record.error else ""
            raise ModelNotReady(f"model {record.key} is {record.state.value}{detail}")
        return record

    def route(self, name: str, ref: VersionRef = None, routing_key: str | None = None) -> VersionRecord:
        """The ready version a request answers from: the one it names, else its traffic split's pick
        (sticky by ``routing_key``), else the default one. A pick that is not ready now falls back to
        the default version: a split never fails a request."""
        if ref is None and (rollout := self.rollouts.get(name)) is not None and rollout.split is not None:
            versions = self._versions(name)
            picked = rollout.split.pick(routing_key)
            target = self.labels.get(name, {}).get(picked) if isinstance(picked, str) else picked
            record = versions.get(target) if isinstance(target, int) else None
            if record is not None and record.ready:
                return record
        return self.ready(name, ref)

    @contextmanager
    def hold(self, name: str, ref: VersionRef = None, routing_key: str | None = None) -> Iterator[VersionRecord]:
        """The version :meth:`route` picks, not unloaded until the block ends (an unload waits for it)."""
        record = self.route(name, ref, routing_key)
        record.in_flight += 1
        try:
            yield record
        finally:
            record.in_flight -= 1

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when started, some version is ready, and every required model has a ready version (a
        ``name:version`` entry: that version); with each version's state."""
        if not self.started:
            return False, {}
        versions = self.all_versions()
        states = {v.key: ("READY" if v.ready else v.state.value) for v in versions}
        ready = any(v.ready for v in versions) and all(
            any(v.ready for v in versions if entry in (v.name, v.key)) for entry in self.required
        )
        return ready, states

    def _versions(self, name: str) -> dict[int, VersionRecord]:
        if name not in self.records:
            raise NotFound(f"model {name!r} not found; available: {', '.join(sorted(self.records)) or 'none'}")
        return self.records[name]
