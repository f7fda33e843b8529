"""Pydantic request and response bodies of the native API's predict, feature-maps and explain (``/api/v1``).

The model list, a version's card and the health answers are status views (:mod:`service.protocol.native`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
