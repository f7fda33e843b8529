"""Record a version's test accuracy per runtime and precision in its model card.

The service serves a version in a reduced precision (or on OpenVINO) only when its card records that
way's accuracy close enough to float32's (``CNN_MAX_ACCURACY_DROP``). The accuracy is measured here with
the engines the service itself runs (:mod:`service.hosting.engines`), on every way this machine supports;
records of other ways (say float16, measured on a GPU machine) are kept.

Run on existing versions: ``python -m models.precision model_repository/fashion_cnn/1 [more dirs]``;
:mod:`models.train` calls :func:`record_precisions` on each new version before it is published.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from pathlib import Path

from contract import PRECISIONS, REFERENCE, RUNTIMES, ModelCard, PrecisionAccuracy
from models.data import Split, load_fashion_mnist
from models.evaluate import evaluate

logger = logging.getLogger(__name__)


def evaluate_precisions(version_dir: Path, card: ModelCard, split: Split) -> list[PrecisionAccuracy]:
    """Accuracy of every runtime and precision this machine can run, float32 TensorFlow first."""
    import tensorflow as tf

    from service.hosting import engines

    saved_model = tf.saved_model.load(str(version_dir))
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    records = []
    builder = engines.Builder(saved_model, card)
    for runtime in RUNTIMES:
        for precision in PRECISIONS:
            reason = engines.unsupported_reason(runtime, precision)
            if reason:
                logger.info("%s/%s not evaluated: %s", runtime, precision, reason)
                continue
            engine = builder.build(runtime, precision)
            value = evaluate(engine.predict, split).accuracy
            logger.info("%s %s/%s: test accuracy %.4f", card.name, runtime, precision, value)
            device = engines.device_name()
            records.append(
                PrecisionAccuracy(
                    runtime=runtime,
                    precision=precision,
                    accuracy=value,
                    samples=len(split),
                    device=device,
                    evaluated=when,
                )
            )
    return sorted(records, key=lambda r: ((r.runtime, r.precision) != REFERENCE, r.runtime, r.precision))


def record_precisions(version_dir: Path, split: Split) -> ModelCard:
    """Evaluate and write the records into the version's card (kept: records of ways not run here)."""
    card = ModelCard.read(version_dir)
    fresh = evaluate_precisions(version_dir, card, split)
    measured = {(r.runtime, r.precision) for r in fresh}
    kept = [r for r in card.precisions if (r.runtime, r.precision) not in measured]
    card.precisions = [*fresh, *kept]
    card.write(version_dir)
    return card


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dirs", type=Path, nargs="+", help="<repository>/<model>/<version> directories")
    parser.add_argument("--data-dir", help="directory of the Fashion-MNIST IDX files")
    args = parser.parse_args(argv)
    test = load_fashion_mnist(args.data_dir).test
    for version_dir in args.version_dirs:
        card = record_precisions(version_dir, test)
        reference = card.recorded(*REFERENCE)
        for record in card.precisions:
            change = (record.accuracy - reference.accuracy) * 100 if reference else float("nan")
            logger.info("%s: %s/%s %.2f%% (%+.2f pp vs float32) on %s", version_dir, record.runtime,
                        record.precision, record.accuracy * 100, change + 0.0, record.device)  # fmt: skip


if __name__ == "__main__":
    main()
