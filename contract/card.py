"""What an exported model version promises: signature and tensor names, and its ``model_card.json``.

A version directory ``<repository>/<name>/<version>/`` holds a SavedModel with two signatures,
``serving_default`` (``images`` → ``probabilities``) and ``feature_maps`` (``images`` → one output per
layer), and a model card: the input contract, class names, metrics, training run, layer summary and
test accuracy per runtime and precision; once quantized, also an int8 OpenVINO model (:data:`INT8_MODEL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODEL_CARD_FILE = "model_card.json"
SERVING_SIGNATURE = "serving_default"
FEATURE_MAPS_SIGNATURE = "feature_maps"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
# Ways to run a version: the runtime that executes it and the precision it computes in. TensorFlow in
# float32 is the reference every other way is compared with.
RuntimeName = Literal["tensorflow", "openvino"]
PrecisionName = Literal["fp32", "bf16", "fp16", "int8"]
RUNTIMES: tuple[RuntimeName, ...] = ("tensorflow", "openvino")
PRECISIONS: tuple[PrecisionName, ...] = ("fp32", "bf16", "fp16", "int8")
# A version's 8-bit model: its serving signature quantized by ``python -m models.precision`` (OpenVINO IR).
INT8_MODEL = Path("openvino_int8") / "model.xml"
REFERENCE: tuple[RuntimeName, PrecisionName] = ("tensorflow", "fp32")


class LayerSummary(BaseModel):
    """One layer of the architecture summary (per image, float32 activations)."""

    name: str
    type: str
    output_shape: list[int]
    kernel_size: list[int] | None
    strides: list[int] | None
    padding: str | None
    activation: str | None
    params: int
    trainable_params: int
    mult_adds: int = Field(description="Multiply-adds per image.")
    memory_bytes: int = Field(description="float32 activation memory per image.")
    receptive_field: list[int] = Field(description="Input pixels (height, width) one output unit sees.")
    jump: list[int] | None = Field(description="Input pixels between neighbouring output units; null if global.")
    inputs: list[str] = Field(
        default_factory=list,
        description="The layers (or the model input) this layer reads; two or more where branches merge.",
    )


class ModelSummary(BaseModel):
    """Every layer of a model with its totals."""

    name: str
    input_shape: list[int]
    layers: list[LayerSummary] = []
    total_params: int = 0
    trainable_params: int = 0
    total_mult_adds: int = 0
    total_activation_bytes: int = 0


class Preprocessing(BaseModel):
    """How an image becomes the model's input (documentation for clients; the service implements it)."""

    color: str
    size: list[int]
    scale: str
    polarity: str


class TensorSpec(BaseModel):
    """A signature tensor: name, dtype and shape with ``-1`` for the batch dimension."""

    name: str
    dtype: str
    shape: list[int]
    range: list[float] | None = None
    preprocessing: Preprocessing | None = None


class SignatureSpec(BaseModel):
    inputs: list[str]
    outputs: list[str]


class PrecisionAccuracy(BaseModel):
    """Test-set accuracy of the version run one way (runtime and precision), and where it was measured."""

    runtime: RuntimeName
    precision: PrecisionName
    accuracy: float = Field(ge=0, le=1)
    samples: int = Field(ge=1)
    device: str = Field(description="The CPU (or GPU) it was evaluated on.")
    evaluated: str = Field(description="When (ISO 8601, UTC).")


class ModelCard(BaseModel):
    """``model_card.json``: everything a server needs about a model version without importing TensorFlow."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int
    architecture: str | None = None
    created: str | None = None
    framework: dict[str, str] = {}
    input: TensorSpec
    output: TensorSpec
    class_names: list[str] = Field(min_length=1)
    signatures: dict[str, SignatureSpec]
    metrics: dict[str, Any] = {}
    training: dict[str, Any] = {}
    summary: ModelSummary | None = None
    precisions: list[PrecisionAccuracy] = Field(
        default=[], description="Test accuracy per runtime and precision; the service serves only those recorded."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        missing = {SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE} - set(self.signatures)
        if missing:
            raise ValueError(f"signatures {sorted(missing)} are missing")
        if len(self.input.shape) < 2 or any(d < 1 for d in self.input.shape[1:]):
            raise ValueError(f"input shape {self.input.shape} must be [-1, positive dimensions...]")
        if self.output.shape[-1:] != [len(self.class_names)]:
            raise ValueError(f"output shape {self.output.shape} does not end in {len(self.class_names)} classes")
        return self

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-image input shape, e.g. ``(28, 28, 1)``."""
        return tuple(self.input.shape[1:])

    @property
    def feature_layers(self) -> list[str]:
        """The layers whose activations the ``feature_maps`` signature returns, input to output."""
        return list(self.signatures[FEATURE_MAPS_SIGNATURE].outputs)

    def recorded(self, runtime: str, precision: str) -> PrecisionAccuracy | None:
        """The recorded accuracy of running this version with ``runtime`` in ``precision``, if any."""
        return next((p for p in self.precisions if (p.runtime, p.precision) == (runtime, precision)), None)

    @classmethod
    def read(cls, version_dir: Path) -> ModelCard:
        """Parse and check ``model_card.json`` of a version directory (``OSError`` / ``ValueError`` on failure)."""
        return cls.model_validate_json((version_dir / MODEL_CARD_FILE).read_bytes())

    def write(self, version_dir: Path) -> Path:
        path = version_dir / MODEL_CARD_FILE
        path.write_text(self.model_dump_json(indent=2, exclude_none=False) + "\n")
        return path
