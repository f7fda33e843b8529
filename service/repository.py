"""The model repository: discovers ``<name>/<version>/`` SavedModels and loads them with their cards.

Only what the training module exported is used: the SavedModel's ``serving_default`` and
``feature_maps`` signatures and ``model_card.json``. A version that fails to load stays listed with
state ``UNAVAILABLE`` and its error, while the others serve.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import InvalidInput, ModelNotReady, NotFound

logger = logging.getLogger(__name__)

MODEL_CARD = "model_card.json"
SERVING_SIGNATURE = "serving_default"
FEATURE_MAPS_SIGNATURE = "feature_maps"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModelState(StrEnum):
    """TF Serving's version states (the subset this server goes through)."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"
    END = "END"


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    state: ModelState = ModelState.LOADING
    error: str | None = None
    card: dict[str, Any] = field(default_factory=dict)
    saved_model: Any = None  # the loaded trackable; keeps the signatures' variables alive
    batcher: Any = None  # service.batcher.Batcher once serving

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def input_name(self) -> str:
        return self.card["input"]["name"]

    @property
    def output_name(self) -> str:
        return self.card["output"]["name"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-image input shape, e.g. ``(28, 28, 1)``."""
        return tuple(int(d) for d in self.card["input"]["shape"][1:])

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def feature_layers(self) -> list[str]:
        return list(self.card["signatures"][FEATURE_MAPS_SIGNATURE]["outputs"])

    @property
    def ready(self) -> bool:
        return self.state is ModelState.AVAILABLE and self.batcher is not None and self.batcher.alive

    # -- inference (called from worker threads) ----------------------------------------------------
    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        signature = self.saved_model.signatures[SERVING_SIGNATURE]
        return signature(**{self.input_name: tf.constant(images)})[self.output_name].numpy()

    def feature_maps(self, images: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        signature = self.saved_model.signatures[FEATURE_MAPS_SIGNATURE]
        outputs = signature(**{self.input_name: tf.constant(images)})
        return {name: outputs[name].numpy() for name in layers}

    def layer_names(self, layer: str | None) -> list[str]:
        """The requested layer (or all of them), refusing unknown names with a 404."""
        if layer is None:
            return self.feature_layers
        if layer not in self.feature_layers:
            raise NotFound(f"model {self.name} has no layer {layer!r}; layers: {', '.join(self.feature_layers)}")
        return [layer]


def _read_card(path: Path) -> dict[str, Any]:
    card = json.loads((path / MODEL_CARD).read_text())
    for key in ("input", "output", "class_names", "signatures"):
        if key not in card:
            raise ValueError(f"{MODEL_CARD} lacks {key!r}")
    return card


def load_version(model: ModelVersion) -> None:
    """Load one SavedModel and its card, and warm it up; failures mark it UNAVAILABLE."""
    import tensorflow as tf

    try:
        model.card = _read_card(model.path)
        model.saved_model = tf.saved_model.load(str(model.path))
        missing = {SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE} - set(model.saved_model.signatures)
        if missing:
            raise ValueError(f"SavedModel lacks signatures {sorted(missing)}")
        warmup = np.zeros((1, *model.input_shape), dtype=np.float32)
        probabilities = model.predict(warmup)
        if probabilities.shape != (1, len(model.class_names)):
            raise ValueError(f"warm-up output shape {probabilities.shape} does not match the class names")
        model.feature_maps(warmup, model.feature_layers)
    except Exception as exc:
        model.state, model.error = ModelState.UNAVAILABLE, f"{type(exc).__name__}: {exc}"
        model.saved_model = None
        logger.error("model %s failed to load from %s: %s", model.label, model.path, model.error)
        return
    model.state = ModelState.AVAILABLE
    logger.info("loaded model %s from %s", model.label, model.path)


class ModelRepository:
    """Models by name, each with its versions; the highest AVAILABLE version is the default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, dict[int, ModelVersion]] = {}

    def discover(self, wanted: list[str], all_versions: bool) -> list[ModelVersion]:
        """Find version directories; ``wanted`` holds ``name`` or ``name:version`` (empty = all)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} does not exist")
        selection: dict[str, set[int] | None] = {}
        for entry in wanted:
            name, _, version = entry.partition(":")
            if version:
                bucket = selection.setdefault(name, set())
                if bucket is not None:
                    bucket.add(int(version))
            else:
                selection[name] = None
        found: list[ModelVersion] = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)):
            if selection and model_dir.name not in selection:
                continue
            versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
            chosen = selection.get(model_dir.name)
            if chosen:
                versions = [v for v in versions if v in chosen]
            elif not all_versions and versions:
                versions = versions[-1:]
            for version in versions:
                entry = ModelVersion(model_dir.name, version, model_dir / str(version))
                self.models.setdefault(model_dir.name, {})[version] = entry
                found.append(entry)
        missing = set(selection) - set(self.models)
        if missing:
            raise FileNotFoundError(f"models {sorted(missing)} not found in {self.root}")
        return found

    def all_versions(self) -> list[ModelVersion]:
        return [v for versions in self.models.values() for v in versions.values()]

    def find(self, name: str, version: int | str | None = None) -> ModelVersion:
        """The named version (or the default one) whatever its state; 404 when unknown."""
        versions = self.models.get(name)
        if not versions:
            raise NotFound(f"model {name!r} not found; available: {', '.join(sorted(self.models)) or 'none'}")
        if version is None:
            available = [v for v in versions.values() if v.state is ModelState.AVAILABLE]
            return max(available or versions.values(), key=lambda v: v.version)
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"model version must be an integer, got {version!r}") from None
        if number not in versions:
            raise NotFound(f"model {name!r} has no version {number}; versions: {sorted(versions)}")
        return versions[number]

    def get(self, name: str, version: int | str | None = None) -> ModelVersion:
        """Like :meth:`find` but only a version ready to serve (503 otherwise)."""
        model = self.find(name, version)
        if not model.ready:
            detail = f": {model.error}" if model.error else ""
            raise ModelNotReady(f"model {model.label} is {model.state.value}{detail}")
        return model
