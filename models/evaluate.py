"""Evaluate an exported SavedModel with plain TensorFlow (no Keras objects needed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from contract import INPUT_NAME, OUTPUT_NAME, SERVING_SIGNATURE
from models.data import Split, to_model_input


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    correct: int
    samples: int


def evaluate_saved_model(path: str | Path, split: Split, batch_size: int = 500) -> Evaluation:
    """Accuracy and mean cross-entropy of ``serving_default`` on a data split."""
    serve = tf.saved_model.load(str(path)).signatures[SERVING_SIGNATURE]
    return evaluate(lambda batch: serve(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy(), split, batch_size)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], split: Split, batch_size: int = 500) -> Evaluation:
    """Accuracy and mean cross-entropy of ``predict`` (model input → class probabilities) on a data split."""
    batches = (to_model_input(split.images[start : start + batch_size]) for start in range(0, len(split), batch_size))
    probabilities = np.concatenate([predict(batch) for batch in batches])
    picked = probabilities[np.arange(len(split)), split.labels]
    correct = int((probabilities.argmax(axis=1) == split.labels).sum())
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean())
    return Evaluation(accuracy=correct / len(split), loss=loss, correct=correct, samples=len(split))
