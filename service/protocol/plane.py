"""The data plane: what the app factory hands both servers (REST routes and gRPC servicers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.core.metrics import Metrics
from service.core.settings import Settings
from service.hosting.model_config import LabelTarget
from service.hosting.table import ModelTable
from service.inference.pipeline import InferencePipeline


class ModelControl(Protocol):
    """The management calls: load, unload and label moves (the reconciler does them)."""

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...

    def set_label(self, name: str, label: str, target: LabelTarget | None) -> None: ...


@dataclass(frozen=True, slots=True)
class DataPlane:
    """Settings, metrics, the read-only model table, the inference pipeline and model control."""

    settings: Settings
    metrics: Metrics
    table: ModelTable
    pipeline: InferencePipeline
    control: ModelControl
