"""The Open Inference Protocol's status views, REST and gRPC alike: server and model metadata, model
readiness, and the model repository extension's index."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service import SERVER_NAME, __version__
from service.hosting.planner import ServingPlan
from service.hosting.table import ModelTable, VersionRef
from service.hosting.versions import VersionRecord, VersionState

# The repository extension's states: READY, UNAVAILABLE, LOADING, UNLOADING.
_INDEX_STATE = {
    VersionState.START: "LOADING",
    VersionState.LOADING: "LOADING",
    VersionState.AVAILABLE: "READY",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.END: "UNAVAILABLE",
}


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    serving: ServingPlan | None = Field(
        None, description="Extension: the runtime and precision predictions run on, and the timings behind it."
    )


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelReady(BaseModel):
    name: str
    ready: bool


class IndexEntry(BaseModel):
    name: str
    version: str = ""
    state: str
    reason: str = ""


def server_metadata() -> ServerMetadata:
    """The server's name, version and protocol extensions."""
    return ServerMetadata(name=SERVER_NAME, version=__version__, extensions=["binary_tensor_data", "model_repository"])


def model_metadata(table: ModelTable, name: str, ref: VersionRef) -> ModelMetadata:
    """A ready version's metadata: the model's versions, its platform and tensors, and its serving plan."""
    record = table.ready(name, ref)
    card, loaded = record.card, record.loaded
    assert card is not None and loaded is not None  # ready
    return ModelMetadata(
        name=record.name,
        versions=[str(v) for v in table.version_numbers(record.name)],
        platform="tensorflow_savedmodel",
        inputs=[TensorMetadata(name=card.input.name, datatype="FP32", shape=card.input.shape)],
        outputs=[TensorMetadata(name=card.output.name, datatype="FP32", shape=card.output.shape)],
        serving=loaded.plan,
    )


def model_ready(table: ModelTable, name: str, ref: VersionRef) -> ModelReady:
    """Whether the version is ready (404 when it is unknown)."""
    record = table.find(name, ref)
    return ModelReady(name=record.name, ready=record.ready)


def _entry(record: VersionRecord) -> IndexEntry:
    state = "READY" if record.ready else _INDEX_STATE[record.state]
    reason = record.error or ("unloaded" if record.state is VersionState.END else "")
    return IndexEntry(name=record.name, version=str(record.version), state=state, reason=reason)


def repository_index(table: ModelTable, only_ready: bool) -> list[IndexEntry]:
    """Every model version and its state."""
    entries = []
    for name in sorted(table.names):
        versions = table.versions(name)
        if not versions and not only_ready:
            entries.append(IndexEntry(name=name, state="UNAVAILABLE", reason="no version found"))
        entries += [_entry(v) for v in versions]
    return [e for e in entries if e.state == "READY" or not only_ready]
