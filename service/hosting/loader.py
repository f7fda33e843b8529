"""Loading one version directory: its card, its SavedModel and the engine its predictions run on.

Only what the training module exported is used: ``model_card.json`` and the SavedModel's
``serving_default`` and ``feature_maps`` signatures. :func:`load_model` reads and checks them, then
lets :mod:`service.hosting.planner` choose the engine (runtime and precision) predictions run on; the
result is a :class:`LoadedModel`. Feature maps and explanations always run the float32 SavedModel.
Everything here runs in the loader thread or in inference threads, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from contract import FEATURE_MAPS_SIGNATURE, MODEL_CARD_FILE, SERVING_SIGNATURE, ModelCard
from service.core.errors import describe_validation
from service.core.request import ExplainSpec, Explanation
from service.hosting.engines import Engine, TensorFlowSignature
from service.hosting.explain import Explainer
from service.hosting.planner import PlanError, PlanOptions, ServingPlan, describe, plan_serving

logger = logging.getLogger(__name__)


class LoadError(Exception):
    """Why a version cannot serve, in words safe to show a client (no paths, no TensorFlow internals)."""


@dataclass
class LoadedModel:
    """A loaded version: its card, SavedModel, the engine predictions run on and why, and the calls
    inference threads make on it."""

    card: ModelCard
    saved_model: Any  # the loaded trackable; keeps the signatures' variables alive
    reference: TensorFlowSignature  # the SavedModel's serving_default, float32 as exported
    engine: Engine | None = None  # what predictions run on (service.hosting.engines)
    plan: ServingPlan | None = None  # why that engine, with its timings
    pad_targets: tuple[int, ...] = ()  # rows a batch of n runs as (service.hosting.planner.pad_targets)
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    _explainer: Explainer | None = field(default=None, repr=False)  # built on the first explain call
    _explainer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities on the served engine."""
        assert self.engine is not None, "predict before the engine was chosen"
        return self.engine.predict(images)

    def reference_predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities of the float32 SavedModel, as exported."""
        return self.reference.predict(images)

    def feature_maps(self, images: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        signature = self.saved_model.signatures[FEATURE_MAPS_SIGNATURE]
        outputs = signature(**{self.card.input.name: tf.constant(images)})
        return {name: outputs[name].numpy() for name in layers}

    def explain(self, images: np.ndarray, spec: ExplainSpec) -> Explanation:
        with self._explainer_lock:  # the first call freezes the graph; the others wait for it
            if self._explainer is None:
                self._explainer = Explainer(self.saved_model, self.card, self.reference_predict)
        return self._explainer.explain(images, spec)


def read_card(path: Path) -> ModelCard:
    try:
        return ModelCard.read(path)
    except FileNotFoundError:
        raise LoadError(f"{MODEL_CARD_FILE} is missing") from None
    except ValidationError as exc:
        raise LoadError(f"{MODEL_CARD_FILE} is invalid: {describe_validation(exc, 'card')}") from None
    except OSError:
        raise LoadError(f"{MODEL_CARD_FILE} could not be read") from None


def _open(path: Path) -> LoadedModel:
    """The card and the SavedModel, checked with one batch-1 call of both signatures."""
    import tensorflow as tf

    started = time.perf_counter()
    card = read_card(path)
    try:
        saved_model = tf.saved_model.load(str(path))
    except Exception as exc:
        raise LoadError("the SavedModel could not be loaded") from exc
    missing = {SERVING_SIGNATURE, FEATURE_MAPS_SIGNATURE} - set(saved_model.signatures)
    if missing:
        raise LoadError(f"the SavedModel lacks signatures {sorted(missing)}")
    model = LoadedModel(card, saved_model, TensorFlowSignature(saved_model, card))
    model.load_seconds = time.perf_counter() - started
    one = np.zeros((1, *card.input_shape), dtype=np.float32)
    try:  # the chosen engine is warmed up at every batch size the plan times
        model.feature_maps(one, card.feature_layers)
        probabilities = model.reference_predict(one)
    except Exception as exc:
        raise LoadError("the SavedModel failed its warm-up call (its signature does not match its card)") from exc
    if probabilities.shape[1:] != (len(card.class_names),):
        raise LoadError(f"warm-up output shape {probabilities.shape} does not match the card's class names")
    return model


def load_model(path: Path, key: str, options: PlanOptions | None = None) -> LoadedModel:
    """Load the version at ``path`` (``key``: ``name:version``, for the log), check it with a call, and
    choose and warm up its engine (:func:`service.hosting.planner.plan_serving`).

    Raises :class:`LoadError` with a reason safe to show a client; the log gets the full cause and the path.
    """
    try:
        model = _open(path)
        loaded = time.perf_counter()
        try:
            model.engine, model.plan, model.pad_targets = plan_serving(
                model.saved_model, model.card, path, options or PlanOptions()
            )
        except PlanError as exc:
            raise LoadError(str(exc)) from None
        model.warmup_seconds = time.perf_counter() - loaded
    except Exception as exc:
        reason = str(exc) if isinstance(exc, LoadError) else "the model could not be loaded"
        logger.error("model %s failed to load from %s: %s", key, path, reason, exc_info=exc)
        raise LoadError(reason) from None
    logger.debug(describe(key, model.plan))
    return model
