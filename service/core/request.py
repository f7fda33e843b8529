"""The one internal request every API dialect decodes into, and the one result it encodes from.

A dialect codec (:mod:`service.codecs`) turns its wire format into an :class:`InferenceRequest`
without touching a model; :class:`service.inference.pipeline.InferencePipeline` runs it and returns an
:class:`InferenceResult`; the codec encodes that. These are internal, already-parsed values (numpy
arrays, raw bytes), so they are slotted dataclasses; wire schemas are pydantic models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from contract import ModelCard
from service.core.errors import InvalidInput
from service.core.tensors import TensorInput


class Api(StrEnum):
    """Which API a request came through (a metrics label)."""

    native = "native"
    tfserving = "tfserving"
    v2 = "v2"


class Operation(StrEnum):
    classify = "classify"
    feature_maps = "feature_maps"
    explain = "explain"


class Polarity(StrEnum):
    """How to treat image brightness: detect from the border, force inversion, or keep as sent."""

    auto = "auto"
    invert = "invert"
    keep = "keep"


class ExplainMethod(StrEnum):
    gradcam = "gradcam"
    saliency = "saliency"
    occlusion = "occlusion"


@dataclass(frozen=True, slots=True)
class ExplainSpec:
    """What to explain: the method, Grad-CAM's layer, the class (``None``: the top-1) and occlusion's patch."""

    method: ExplainMethod = ExplainMethod.gradcam
    layer: str | None = None
    target: int | None = None
    patch_size: int = 4
    stride: int = 2


@dataclass(frozen=True, slots=True)
class Explanation:
    """Heatmaps ``(n, h, w)`` in [0, 1], the class each explains, and the probabilities of the image as sent."""

    method: ExplainMethod
    layer: str | None
    targets: np.ndarray  # (n,) class ids
    heatmaps: np.ndarray  # (n, h, w) float32
    probabilities: np.ndarray  # (n, classes)
    inputs: np.ndarray  # (n, h, w, channels): the model input the heatmaps lie over


VERSION_NUMBER = re.compile(r"[0-9]{1,18}")  # a version directory's name, or a version in a path or message
# A version label starts with a letter, so it never reads as a version number.
LABEL_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
_LABEL = re.compile(LABEL_PATTERN)


def version_number(text: str) -> int:
    """A version number as a path or message names it: ASCII digits only, the same in every transport."""
    if not VERSION_NUMBER.fullmatch(text):
        raise InvalidInput(f"model version must be a number of ASCII digits, got {text[:40]!r}")
    return int(text)


def version_or_label(text: str) -> int | str | None:
    """A field that names a version number or a label (v2 gRPC ``model_version``); empty: the default."""
    if not text:
        return None
    if text[0].isascii() and text[0].isdigit():
        return version_number(text)
    if not _LABEL.fullmatch(text):
        raise InvalidInput(f"model version must be a number or a label, got {text[:40]!r}")
    return text


@dataclass(frozen=True, slots=True)
class Target:
    """The model version a request is for, known from its path or message before its body is read: a
    version number, a label, or ``None`` for the default version (or the model's traffic split, sticky
    by ``routing_key``). ``operation`` is what the route runs: a classification is refused at once when
    the model's queue is full."""

    model: str
    version: int | str | None
    operation: Operation = Operation.classify
    routing_key: str | None = None


@dataclass(slots=True)
class InferenceRequest:
    """What to run, with which input (the model version is the request's :class:`Target`).

    Exactly one of ``images`` (encoded image files) and ``tensor`` is set. ``input_name`` and
    ``outputs`` are the names the client used; the pipeline checks them against the model's signature.
    The last group says how the dialect wants its answer encoded; the pipeline does not read it.
    """

    api: Api
    operation: Operation = Operation.classify
    images: list[bytes] | None = None
    tensor: TensorInput | None = None
    polarity: Polarity = Polarity.auto
    input_name: str | None = None
    outputs: tuple[str, ...] | None = None
    explain: ExplainSpec | None = None  # what to explain (operation ``explain``)
    # -- how to answer (dialect-specific) --
    top_k: int | None = None
    as_png: bool = False
    rows: bool = True
    binary_output: bool = False
    request_id: str | None = None

    @property
    def count(self) -> int:
        """Images in the request, known before any image is decoded or tensor converted."""
        if self.images is not None:
            return len(self.images)
        return self.tensor.count if self.tensor is not None else 0


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """A request's answer: class probabilities ``(n, classes)``, the activations of the asked layers, or
    an explanation."""

    request: InferenceRequest
    model_name: str
    model_version: int
    card: ModelCard
    probabilities: np.ndarray | None = None
    activations: dict[str, np.ndarray] | None = None
    explanation: Explanation | None = None
    model_input: np.ndarray | None = None  # a classification's validated input (shadow and payload log)

    @property
    def nbytes(self) -> int:
        """Size of the output arrays (encoding a large result is moved off the event loop)."""
        if self.explanation is not None:
            return self.explanation.heatmaps.nbytes
        if self.activations is not None:
            return sum(array.nbytes for array in self.activations.values())
        return self.probabilities.nbytes if self.probabilities is not None else 0
