"""The native API's status views: the model list with versions, states and labels, a version's card, and
liveness and readiness."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contract import ModelSummary, TensorSpec
from service.hosting.explain import default_gradcam_layer, gradcam_layers
from service.hosting.planner import ServingPlan
from service.hosting.table import ModelTable, VersionRef
from service.hosting.versions import VersionRecord, VersionState


class Transition(BaseModel):
    state: str
    at: float = Field(description="Unix time of the change.")


class VersionStatus(BaseModel):
    version: int
    state: str = Field(description="START, LOADING, AVAILABLE, UNLOADING or END (TF Serving's states).")
    error: str | None = Field(None, description="Why the version failed to load (state END).")
    transitions: list[Transition] = Field([], description="The version's state changes, oldest first.")


class ModelEntry(BaseModel):
    name: str
    default_version: int | None = Field(description="The highest AVAILABLE version (what an unversioned call gets).")
    labels: dict[str, int] = Field({}, description="Version labels and the version each points at.")
    versions: list[VersionStatus] = Field(description="Newest first; unloaded and failed versions stay, as END.")


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


def model_entry(table: ModelTable, name: str) -> ModelEntry:
    """A model's versions (newest first) with their states, its default version and its labels."""
    versions = table.versions(name)
    default = table.default(name) if versions else None
    return ModelEntry(
        name=name,
        default_version=default.version if default and default.ready else None,
        labels=table.label_versions(name),
        versions=[_version_status(v) for v in versions],
    )


def model_detail(table: ModelTable, name: str, ref: VersionRef) -> ModelDetail:
    """A version's state and, once it has loaded, its card and (while AVAILABLE) its serving plan."""
    record = table.find(name, ref)
    detail = ModelDetail(name=record.name, version=record.version, state=record.state.value, error=record.error)
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
