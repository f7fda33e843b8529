"""The native API's status views: the model list with versions, states, labels and rollout (traffic
split, shadow and its comparisons), a version's card, and liveness and readiness."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contract import ModelSummary, TensorSpec
from service.core.errors import ServiceError
from service.hosting.explain import default_gradcam_layer, gradcam_layers
from service.hosting.planner import ServingPlan
from service.hosting.table import ModelTable
from service.hosting.traffic import VersionRef, version_ref
from service.hosting.versions import VersionRecord, VersionState
from service.inference.shadow import Comparison, ShadowRunner


class Transition(BaseModel):
    state: str
    at: float = Field(description="Unix time of the change.")


class VersionStatus(BaseModel):
    version: int
    state: str = Field(description="START, LOADING, AVAILABLE, UNLOADING or END (TF Serving's states).")
    error: str | None = Field(None, description="Why the version failed to load (state END).")
    transitions: list[Transition] = Field([], description="The version's state changes, oldest first.")


class TrafficShare(BaseModel):
    target: str = Field(description="The version number or label the config's traffic split names.")
    version: int | None = Field(description="The version it names now (null: none serving; the default answers).")
    weight: float
    share: float = Field(description="Its share of the requests that name no version, 0–1.")


class ShadowLatency(BaseModel):
    p50_ms: float
    p95_ms: float
    mean_ms: float


class ShadowComparison(BaseModel):
    """A shadow version against one live version: how often their top-1 classes agree."""

    live_version: int
    shadow_version: int
    requests: int = Field(description="Requests run on both and compared.")
    predictions: int = Field(description="Images compared.")
    agreements: int = Field(description="Images on which the shadow's top-1 class was the live one's.")
    agreement: float = Field(description="agreements / predictions.")
    class_names: list[str]
    confusion: list[list[int]] = Field(description="Counts by live top-1 class (rows) and shadow top-1 (columns).")
    latency: ShadowLatency = Field(description="The shadow's answer time over its most recent 1,024 requests.")


class ShadowStatus(BaseModel):
    target: str = Field(description="The version number or label the config names as shadow.")
    version: int | None = Field(description="The version it names now (null: none serving).")
    fraction: float = Field(description="The share of default-route classifications it also runs.")


class RolloutStatus(BaseModel):
    """How the model's default route is spread over versions, and what its shadow has shown."""

    traffic: list[TrafficShare] = Field([], description="Empty: the default version answers every request.")
    shadow: ShadowStatus | None = None
    dropped: dict[str, int] = Field({}, description="Requests sampled for the shadow but not compared, by reason.")
    comparisons: list[ShadowComparison] = Field([], description="Every live and shadow pair compared so far.")


class ModelEntry(BaseModel):
    name: str
    default_version: int | None = Field(description="The highest AVAILABLE version (what an unversioned call gets).")
    labels: dict[str, int] = Field({}, description="Version labels and the version each points at.")
    versions: list[VersionStatus] = Field(description="Newest first; unloaded and failed versions stay, as END.")
    rollout: RolloutStatus = Field(RolloutStatus(), description="The traffic split and shadow (config file).")


class ModelList(BaseModel):
    models: list[ModelEntry]


class ModelDetail(BaseModel):
    """A model version's card: architecture, input contract, classes, metrics and layer summary."""

    name: str
    version: int
    state: str
    error: str | None = None
    architecture: str | None = None
    created: str | None = None
    input: TensorSpec | None = None
    output: TensorSpec | None = None
    class_names: list[str] = []
    feature_layers: list[str] = []
    gradcam_layers: list[str] = Field([], description="The layers the explain endpoint's Grad-CAM accepts.")
    gradcam_default: str | None = Field(None, description="The Grad-CAM layer used when a request names none.")
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    summary: ModelSummary | None = None
    serving: ServingPlan | None = Field(
        None, description="The runtime and precision predictions run on, why, and the timings behind it (loaded)."
    )
    rollout: RolloutStatus = Field(RolloutStatus(), description="The model's traffic split and shadow.")


class LabelAssignment(BaseModel):
    """Body of ``PUT .../labels/{label}``: the AVAILABLE version the label points at, or ``latest``."""

    model_config = ConfigDict(extra="forbid")

    version: StrictInt | Literal["latest"]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="State of every model version, by name:version.")


def _version_status(record: VersionRecord) -> VersionStatus:
    transitions = [Transition(state=state.value, at=at) for state, at in record.transitions]
    return VersionStatus(version=record.version, state=record.state.value, error=record.error, transitions=transitions)


def _serving_version(table: ModelTable, name: str, ref: VersionRef) -> int | None:
    try:
        record = table.find(name, ref)
    except ServiceError:
        return None
    return record.version if record.ready else None


def _comparison(found: Comparison) -> ShadowComparison:
    latencies = np.array(found.latencies or [0.0]) * 1000
    return ShadowComparison(
        live_version=found.live_version,
        shadow_version=found.shadow_version,
        requests=found.requests,
        predictions=found.predictions,
        agreements=found.agreements,
        agreement=found.agreements / found.predictions if found.predictions else 0.0,
        class_names=found.class_names,
        confusion=found.confusion.tolist(),
        latency=ShadowLatency(
            p50_ms=float(np.percentile(latencies, 50)),
            p95_ms=float(np.percentile(latencies, 95)),
            mean_ms=float(latencies.mean()),
        ),
    )


def rollout_status(table: ModelTable, shadows: ShadowRunner, name: str) -> RolloutStatus:
    """The model's split and shadow in force, the versions they name now, and the shadow's comparisons."""
    rollout = table.rollouts.get(name)
    status = RolloutStatus(
        dropped=dict(shadows.dropped.get(name, {})), comparisons=[_comparison(c) for c in shadows.of_model(name)]
    )
    if rollout is None:
        return status
    total = sum(weight for _, weight in rollout.traffic)
    status.traffic = [
        TrafficShare(target=key, version=_serving_version(table, name, version_ref(key)), weight=weight,
                     share=weight / total)
        for key, weight in rollout.traffic
    ]  # fmt: skip
    if rollout.shadow is not None:
        target = rollout.shadow.ref
        version = _serving_version(table, name, target)
        status.shadow = ShadowStatus(target=str(target), version=version, fraction=rollout.shadow.fraction)
    return status


def model_entry(table: ModelTable, shadows: ShadowRunner, name: str) -> ModelEntry:
    """A model's versions (newest first) with their states, its default version, its labels and rollout."""
    versions = table.versions(name)
    default = table.default(name) if versions else None
    return ModelEntry(
        name=name,
        default_version=default.version if default and default.ready else None,
        labels=table.label_versions(name),
        versions=[_version_status(v) for v in versions],
        rollout=rollout_status(table, shadows, name),
    )


def model_detail(table: ModelTable, shadows: ShadowRunner, name: str, ref: VersionRef) -> ModelDetail:
    """A version's state and, once it has loaded, its card and (while AVAILABLE) its serving plan; the
    model's rollout."""
    record = table.find(name, ref)
    detail = ModelDetail(
        name=record.name, version=record.version, state=record.state.value, error=record.error,
        rollout=rollout_status(table, shadows, name),
    )  # fmt: skip
    card = record.card
    if card is None:
        return detail
    available = record.state is VersionState.AVAILABLE and record.loaded is not None
    return detail.model_copy(
        update={
            "architecture": card.architecture,
            "created": card.created,
            "input": card.input,
            "output": card.output,
            "class_names": card.class_names,
            "feature_layers": card.feature_layers,
            "gradcam_layers": gradcam_layers(card),
            "gradcam_default": default_gradcam_layer(card) if card.summary is not None else None,
            "metrics": card.metrics,
            "training": card.training,
            "summary": card.summary,
            "serving": record.loaded.plan if available else None,
        }
    )
