"""What the service knows of one ``<name>/<version>/`` directory: its TF Serving state, its card and,
while it serves, its loaded model and batcher.

Only :class:`service.hosting.reconciler.Reconciler` changes a record; everything else reads it through
:class:`service.hosting.table.ModelTable`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path

from contract import ModelCard
from service.hosting.batcher import Batcher
from service.hosting.loader import LoadedModel
from service.hosting.scan import Fingerprint


class VersionState(StrEnum):
    """TF Serving's version states, in the order a version goes through them."""

    START = "START"  # selected by the version policy; waiting for its directory to be complete
    LOADING = "LOADING"  # loading and warming up
    AVAILABLE = "AVAILABLE"  # serving
    UNLOADING = "UNLOADING"  # no new requests; in-flight ones finish, then it is released
    END = "END"  # unloaded, or failed to load (``error`` says why)


@dataclass
class VersionRecord:
    """One version directory: its state (with the times it changed) and, once loaded, its model."""

    name: str
    version: int
    path: Path
    fingerprint: Fingerprint = ()  # of the files this record was loaded (or failed) from
    state: VersionState = VersionState.START
    error: str | None = None
    card: ModelCard | None = None  # once loaded (kept after an unload)
    loaded: LoadedModel | None = None  # from LOADING's end until it is released
    batcher: Batcher | None = None  # while AVAILABLE and UNLOADING
    in_flight: int = 0  # requests holding it (ModelTable.hold); an unload waits for them
    transitions: list[tuple[VersionState, float]] = field(default_factory=list)  # (state, unix time)

    def __post_init__(self) -> None:
        self.transitions.append((self.state, time.time()))

    @cached_property
    def key(self) -> str:
        """``name:version``: how logs, messages and per-version metrics name it."""
        return f"{self.name}:{self.version}"

    @property
    def ready(self) -> bool:
        """AVAILABLE, with a live batch worker."""
        return self.state is VersionState.AVAILABLE and self.batcher is not None and self.batcher.alive

    def failed_on(self, fingerprint: Fingerprint) -> bool:
        """It failed to load from exactly these files (a change to them is worth another try)."""
        return self.state is VersionState.END and bool(self.error) and self.fingerprint == fingerprint

    @property
    def up(self) -> bool:
        """Loading or serving."""
        return self.state in (VersionState.LOADING, VersionState.AVAILABLE)
