"""Do the explanations point at what the model uses? A deletion test on the Fashion-MNIST test set.

For each image, set to 0 (the background) the ``fraction`` of input pixels an explanation ranks highest
for the predicted class, and measure how much that class's probability drops; compare with setting the
same number of random pixels to 0. A faithful method's drop is much larger than the random one's.

    python -m bench.faithfulness --model fashion_cnn --images 500
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import DEFAULT_REPOSITORY
from service.core.request import ExplainMethod, ExplainSpec
from service.hosting.loader import LoadedModel, load_model
from service.hosting.planner import PlanOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeletionResult:
    method: str
    images: int
    mean_drop: float  # mean fall of the predicted class's probability, masking the top-ranked pixels
    random_drop: float  # the same, masking as many random pixels
    t_statistic: float  # paired t of (drop - random drop)

    @property
    def ratio(self) -> float:
        return self.mean_drop / self.random_drop if self.random_drop > 0 else math.inf


def load_version(repository: Path, name: str, version: int) -> LoadedModel:
    """A version loaded outside the service, predicting in float32 TensorFlow like its explanations."""
    options = PlanOptions(runtime="tensorflow", precision="fp32")
    return load_model(repository / name / str(version), f"{name}:{version}", options)


def _mask(images: np.ndarray, order: np.ndarray, count: int) -> np.ndarray:
    """``images`` ``(n, h, w, 1)`` with the first ``count`` pixels of each row of ``order`` set to 0."""
    flat = images.reshape(len(images), -1).copy()
    np.put_along_axis(flat, order[:, :count], 0.0, axis=1)
    return flat.reshape(images.shape)


def deletion_test(
    model: LoadedModel, images: np.ndarray, methods: list[ExplainSpec], fraction: float = 0.1, seed: int = 0
) -> list[DeletionResult]:
    """The deletion test of each method on ``images`` (model input, ``(n, h, w, 1)`` in [0, 1])."""
    probabilities = model.predict(images)
    predicted = probabilities.argmax(axis=1)
    rows = np.arange(len(images))
    before = probabilities[rows, predicted]
    pixels = images[0].size
    count = max(1, round(fraction * pixels))
    rng = np.random.default_rng(seed)
    random_order = np.argsort(rng.random((len(images), pixels)), axis=1)
    random_drop = before - model.predict(_mask(images, random_order, count))[rows, predicted]
    results = []
    for spec in methods:
        heat = np.concatenate([model.explain(images[i : i + 64], spec).heatmaps for i in range(0, len(images), 64)])
        order = np.argsort(-heat.reshape(len(images), -1), axis=1, kind="stable")
        drop = before - model.predict(_mask(images, order, count))[rows, predicted]
        difference = drop - random_drop
        t = difference.mean() / (difference.std(ddof=1) / math.sqrt(len(images)) + 1e-12)
        results.append(DeletionResult(spec.method.value, len(images), float(drop.mean()), float(random_drop.mean()), t))
    return results


def main() -> None:
    from models.data import load_fashion_mnist, to_model_input

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--fraction", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = load_version(args.repository, args.model, args.version)
    images = to_model_input(load_fashion_mnist().test.images[: args.images])
    methods = [ExplainSpec(method) for method in ExplainMethod]
    header = "| method | mean drop, top %d%% pixels masked | random pixels masked | ratio | paired t |"
    logger.info(header, args.fraction * 100)
    logger.info("|---|---|---|---|---|")
    for result in deletion_test(model, images, methods, args.fraction):
        logger.info(
            "| %s | %.3f | %.3f | %.1f× | %.1f |",
            result.method, result.mean_drop, result.random_drop, result.ratio, result.t_statistic,
        )  # fmt: skip


if __name__ == "__main__":
    main()
