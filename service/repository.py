"""The model repository: discovers ``<name>/<version>/`` SavedModels and loads them with their cards.

Only what the training module exported is used: the SavedModel's ``serving_default`` and
``feature_maps`` signatures and ``model_card.json``. A version that fails to load stays listed with
state ``UNAVAILABLE`` and its error, while the others serve.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from contract import FEATURE_MAPS_SIGNATURE, MODEL_CARD_FILE, SERVING_SIGNATURE, ModelCard
from service.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ModelState(StrEnum):
    """TF Serving's version states (the subset this server goes through)."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"


class LoadError(Exception):
    """Why a version cannot serve, in words safe to show a client (no paths, no TensorFlow internals)."""


@dataclass
class ModelVersion:
    """One ``<name>/<version>/`` directory: its state, its card and, once loaded, its SavedModel."""

    name: str
    version: int
    path: Path
    state: ModelState = ModelState.LOADING
    error: str | None = None
    card: ModelCard | None = None
    saved_model: Any = None  # the loaded trackable; keeps the signatures' variables alive

    @cached_property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def loaded_card(self) -> ModelCard:
        if self.card is None:
            raise LoadError(f"model {self.label} has no model card")
        return self.card

    # -- inference (called from worker threads) ----------------------------------------------------
    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        card = self.loaded_card
        signature = self.saved_model.signatures[SERVING_SIGNATURE]
        return signature(**{card.input.name: tf.constant(images)})[card.output.name].numpy()

    def feature_maps(self, images: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        signature = self.saved_model.signatures[FEATURE_MAPS_SIGNATURE]
        outputs = signature(**{self.loaded_card.input.name: tf.constant(images)})
        return {name: outputs[name].numpy() for name in layers}


def _read_card(path: Path) -> ModelCard:
    try:
        return ModelCard.read(path)
    except FileNotFoundError:
        raise LoadError(f"{MODEL_CARD_FILE} is missing") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise LoadError(f"{MODEL_CARD_FILE} is invalid: {problems}") from None
    except OSError:
        raise LoadError(f"{MODEL_CARD_FILE} could not be read") from None


def _load_checked(model: ModelVersion) -> None:
    import tensorflow as tf

    model.card = _read_card(model.path)
    try:
        model.saved_model = tf.saved_model.load(str(model.path))
    except Exception as exc:
        raise LoadError("the SavedModel could not be loaded") from exc
    missing = {SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE} - set(model.saved_model.signatures)
    if missing:
        raise LoadError(f"the SavedModel lacks signatures {sorted(missing)}")
    warmup = np.zeros((1, *model.card.input_shape), dtype=np.float32)
    try:
        probabilities = model.predict(warmup)
        model.feature_maps(warmup, model.card.feature_layers)
    except Exception as exc:
        raise LoadError("the SavedModel failed its warm-up call (its signature does not match its card)") from exc
    if probabilities.shape != (1, len(model.card.class_names)):
        raise LoadError(f"warm-up output shape {probabilities.shape} does not match the card's class names")


def load_version(model: ModelVersion) -> None:
    """Load one SavedModel and its card, and warm it up; failures mark it UNAVAILABLE.

    The log gets the full cause with the path; ``model.error`` (shown to clients) only the reason.
    """
    try:
        _load_checked(model)
    except Exception as exc:
        model.state, model.saved_model = ModelState.UNAVAILABLE, None
        model.error = str(exc) if isinstance(exc, LoadError) else "the model could not be loaded"
        logger.error("model %s failed to load from %s: %s", model.label, model.path, model.error, exc_info=exc)
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
