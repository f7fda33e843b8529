"""The served models: every known ``<name>/<version>/`` with its state, card and SavedModel, and labels.

Only what the training module exported is used: the SavedModel's ``serving_default`` and
``feature_maps`` signatures and ``model_card.json``. Predictions run on the engine (runtime and
precision) chosen at load (:mod:`service.precision`); feature maps and explanations run the float32
SavedModel. A version goes through TF Serving's states
(:class:`VersionState`); one that fails to load, or was unloaded, stays listed as ``END`` (with its
error) while the others serve. Which versions to load and when is the runtime's business
(:mod:`service.runtime`); this module only keeps the records and answers lookups.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from contract import FEATURE_MAPS_SIGNATURE, MODEL_CARD_FILE, SERVING_SIGNATURE, ModelCard
from service.engines import TensorFlowSignature
from service.errors import NotFound
from service.explain import Explainer, ExplainSpec, Explanation
from service.model_config import LabelTarget
from service.precision import PlanError, PlanOptions, ServingPlan, describe, plan_serving
from service.scan import Fingerprint

logger = logging.getLogger(__name__)


class VersionState(StrEnum):
    """TF Serving's version states, in the order a version goes through them."""

    START = "START"  # selected by the version policy; waiting for its directory to be complete
    LOADING = "LOADING"  # loading and warming up
    AVAILABLE = "AVAILABLE"  # serving
    UNLOADING = "UNLOADING"  # no new requests; in-flight ones finish, then it is released
    END = "END"  # unloaded, or failed to load (``error`` says why)


class LoadError(Exception):
    """Why a version cannot serve, in words safe to show a client (no paths, no TensorFlow internals)."""


@dataclass
class ModelVersion:
    """One ``<name>/<version>/`` directory: its state, its card and, once loaded, its SavedModel."""

    name: str
    version: int
    path: Path
    fingerprint: Fingerprint = ()  # of the files this record was loaded (or failed) from
    state: VersionState = VersionState.START
    error: str | None = None
    card: ModelCard | None = None
    saved_model: Any = None  # the loaded trackable; keeps the signatures' variables alive
    reference: TensorFlowSignature | None = None  # the SavedModel's serving_default, float32 as exported
    engine: Any = None  # what predictions run on (service.engines)
    plan: ServingPlan | None = None  # why that engine, with its timings
    pad_targets: tuple[int, ...] = ()  # rows a batch of n runs as (service.precision.pad_targets)
    in_flight: int = 0  # requests that looked this version up and have not finished
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    transitions: list[tuple[VersionState, float]] = field(default_factory=list)  # (state, unix time)
    _explainer: Explainer | None = field(default=None, repr=False)  # built on the first explain call
    _explainer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.transitions.append((self.state, time.time()))

    @cached_property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    def enter(self, state: VersionState, error: str | None = None) -> None:
        self.state, self.error = state, error
        self.transitions.append((state, time.time()))
        log = logger.warning if error else logger.info
        log("model %s: %s%s", self.label, state.value, f" ({error})" if error else "")

    @property
    def loaded_card(self) -> ModelCard:
        if self.card is None:
            raise LoadError(f"model {self.label} has no model card")
        return self.card

    # -- inference (called from worker threads) ----------------------------------------------------
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities on the served engine."""
        return self.engine.predict(images)

    def reference_predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of the float32 SavedModel, as exported."""
        return self.reference.predict(images)

    def feature_maps(self, images: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        signature = self.saved_model.signatures[FEATURE_MAPS_SIGNATURE]
        outputs = signature(**{self.loaded_card.input.name: tf.constant(images)})
        return {name: outputs[name].numpy() for name in layers}

    def explain(self, images: np.ndarray, spec: ExplainSpec) -> Explanation:
        with self._explainer_lock:  # the first call freezes the graph; the others wait for it
            if self._explainer is None:
                self._explainer = Explainer(self.saved_model, self.loaded_card, self.reference_predict)
        return self._explainer.explain(images, spec)

    def release(self) -> None:
        """Drop the SavedModel and what was built from it (unloading, or a failed load)."""
        self.saved_model = self.reference = self.engine = None
        self._explainer = None


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


def _load_checked(model: ModelVersion, options: PlanOptions) -> None:
    import tensorflow as tf

    started = time.perf_counter()
    model.card = _read_card(model.path)
    try:
        model.saved_model = tf.saved_model.load(str(model.path))
    except Exception as exc:
        raise LoadError("the SavedModel could not be loaded") from exc
    missing = {SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE} - set(model.saved_model.signatures)
    if missing:
        raise LoadError(f"the SavedModel lacks signatures {sorted(missing)}")
    model.reference = TensorFlowSignature(model.saved_model, model.card)
    loaded = time.perf_counter()
    model.load_seconds = loaded - started
    one = np.zeros((1, *model.card.input_shape), dtype=np.float32)
    try:  # the chosen engine is warmed up at every batch size the plan times
        model.feature_maps(one, model.card.feature_layers)
        probabilities = model.reference_predict(one)
    except Exception as exc:
        raise LoadError("the SavedModel failed its warm-up call (its signature does not match its card)") from exc
    if probabilities.shape[1:] != (len(model.card.class_names),):
        raise LoadError(f"warm-up output shape {probabilities.shape} does not match the card's class names")
    try:
        model.engine, model.plan, model.pad_targets = plan_serving(model.saved_model, model.card, options)
    except PlanError as exc:
        raise LoadError(str(exc)) from None
    logger.info(describe(model.label, model.plan))
    model.warmup_seconds = time.perf_counter() - loaded


def load_version(model: ModelVersion, options: PlanOptions | None = None) -> str | None:
    """Load one SavedModel and its card, check it with a call, and choose and warm up its engine
    (:func:`service.precision.plan_serving`); ``None`` on success, else the reason, in words safe to
    show a client.

    Called in a worker thread: it does not change the record's state, the caller does. The log gets
    the full cause with the path.
    """
    try:
        _load_checked(model, options or PlanOptions())
    except Exception as exc:
        model.release()
        reason = str(exc) if isinstance(exc, LoadError) else "the model could not be loaded"
        logger.error("model %s failed to load from %s: %s", model.label, model.path, reason, exc_info=exc)
        return reason
    return None


class ModelRepository:
    """Models by name, each with its versions and labels.

    The default version of a model is its highest AVAILABLE one; a label names one AVAILABLE version
    (or ``latest``, whichever is the default).
    """

    def __init__(self) -> None:
        self.models: dict[str, dict[int, ModelVersion]] = {}
        self.labels: dict[str, dict[str, LabelTarget]] = {}

    def all_versions(self) -> list[ModelVersion]:
        return [v for versions in self.models.values() for v in versions.values()]

    def versions(self, name: str) -> list[ModelVersion]:
        """A model's versions, newest first; 404 when the model is unknown."""
        return sorted(self._versions(name).values(), key=lambda v: -v.version)

    def default(self, name: str) -> ModelVersion:
        versions = self._versions(name)
        if not versions:
            raise NotFound(f"model {name!r} has no versions")
        available = [v for v in versions.values() if v.state is VersionState.AVAILABLE]
        return max(available or versions.values(), key=lambda v: v.version)

    def find(self, name: str, version: int | str | None = None) -> ModelVersion:
        """A version by number, by label (a string), or the default one (``None``), whatever its state;
        404 when unknown."""
        versions = self._versions(name)
        if version is None:
            return self.default(name)
        if isinstance(version, str):
            labels = self.labels.get(name, {})
            if version not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise NotFound(f"model {name!r} has no label {version!r}; labels: {known}")
            target = labels[version]
            return self.default(name) if target == "latest" else versions[target]
        if version not in versions:
            raise NotFound(f"model {name!r} has no version {version}; versions: {sorted(versions)}")
        return versions[version]

    def _versions(self, name: str) -> dict[int, ModelVersion]:
        if name not in self.models:
            raise NotFound(f"model {name!r} not found; available: {', '.join(sorted(self.models)) or 'none'}")
        return self.models[name]
