"""Pydantic request and response models of the native API (``/api/v1``) and health endpoints.

The layer summary rows are the model contract's own (:class:`contract.ModelSummary`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract import ModelSummary, TensorSpec
from service.precision import ServingPlan

PixelDType = Literal["uint8", "float32"]


class PredictJSONRequest(BaseModel):
    """JSON body of ``predict``: base64-encoded image files *or* a tensor of images."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"images": ["iVBORw0KGgoAAAANSUhEUgAA..."]}, {"tensor": [[[0]]], "dtype": "uint8"}]
        },
    )

    images: list[str] | None = Field(None, description="Base64-encoded PNG/JPEG/BMP/GIF/WEBP/TIFF files.")
    tensor: list[Any] | None = Field(
        None, description="Nested list shaped n×28×28 or n×28×28×1 (the model's input size)."
    )
    dtype: PixelDType = Field("float32", description="uint8: values 0–255; float32: values in [0, 1].")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictJSONRequest:
        if (self.images is None) == (self.tensor is None):
            raise ValueError("send exactly one of 'images' (base64 files) or 'tensor'")
        return self


class FeatureMapsJSONRequest(BaseModel):
    """JSON body of ``feature-maps``: one base64 image *or* one image tensor."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="One base64-encoded image file.")
    tensor: list[Any] | None = Field(None, description="One image as a nested list shaped 28×28 or 28×28×1.")
    dtype: PixelDType = Field("float32", description="uint8: values 0–255; float32: values in [0, 1].")

    @model_validator(mode="after")
    def _exactly_one(self) -> FeatureMapsJSONRequest:
        if (self.image is None) == (self.tensor is None):
            raise ValueError("send exactly one of 'image' (base64 file) or 'tensor'")
        return self


class ClassScore(BaseModel):
    class_id: int
    label: str
    probability: float


class ImagePrediction(BaseModel):
    label: str = Field(description="The most probable class.")
    class_id: int
    probability: float
    top_k: list[ClassScore]
    probabilities: list[float] = Field(description="One probability per class, in class-id order.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: int
    predictions: list[ImagePrediction]


class LayerActivation(BaseModel):
    name: str
    shape: list[int] = Field(description="Shape of one image's activation, e.g. [28, 28, 64].")
    min: float
    max: float
    data: list[Any] = Field(description="The activation as a nested list of that shape.")


class FeatureMapsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: int
    layers: list[LayerActivation]


class ExplainResponse(BaseModel):
    """Why the model chose a class for one image: a heatmap over the model's input."""

    model_name: str
    model_version: int
    method: str = Field(description="gradcam, saliency or occlusion.")
    layer: str | None = Field(description="The convolutional layer Grad-CAM used; null for the other methods.")
    target: ClassScore = Field(description="The class explained (the top-1 unless the request named one).")
    prediction: ClassScore = Field(description="The model's top-1 class for the image.")
    shape: list[int] = Field(description="Heatmap height and width: the model's input size.")
    heatmap: list[list[float]] = Field(description="Importance of each input pixel for the target, in [0, 1].")


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

    version: int | Literal["latest"]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="State of every model version, by name:version.")
