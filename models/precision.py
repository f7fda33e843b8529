"""Record a version's test accuracy per runtime and precision in its model card.

The service serves a version in a reduced precision (or on OpenVINO) only when its card records that
way's accuracy close enough to float32's (``CNN_MAX_ACCURACY_DROP``). The accuracy is measured here with
the engines the service itself runs (:mod:`service.hosting.engines`), on every way this machine supports;
records of other ways (say float16, measured on a GPU machine) are kept. With OpenVINO and NNCF installed
(the ``quantize`` extra), the version is first quantized to int8 on training images (:mod:`models.quantize`).

Run on existing versions: ``python -m models.precision model_repository/fashion_cnn/1 [more dirs]``;
:mod:`models.train` calls :func:`record_precisions` on each new version before it is published.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from contract import PRECISIONS, REFERENCE, RUNTIMES, ModelCard, PrecisionAccuracy
from models.data import Split, load_fashion_mnist
from models.evaluate import evaluate
from models.quantize import calibration_images, quantize_int8

logger = logging.getLogger(__name__)


def can_quantize() -> bool:
    """NNCF and OpenVINO are installed (``pip install '.[quantize]'``)."""
    return all(importlib.util.find_spec(name) is not None for name in ("nncf", "openvino"))


def evaluate_precisions(version_dir: Path, card: ModelCard, split: Split) -> list[PrecisionAccuracy]:
    """Accuracy of every runtime and precision this machine can run, float32 TensorFlow first."""
    import tensorflow as tf

    from service.hosting import engines

    saved_model = tf.saved_model.load(str(version_dir))
    when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    records = []
    builder = engines.Builder(saved_model, card, version_dir)
    for runtime in RUNTIMES:
        for precision in PRECISIONS:
            reason = engines.unsupported_reason(runtime, precision) or engines.missing_from_version(
                version_dir, runtime, precision
            )
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


def record_precisions(version_dir: Path, split: Split, calibration: np.ndarray | None = None) -> ModelCard:
    """Write the version's int8 model from ``calibration`` images (if given, and NNCF is installed), then
    evaluate and write the records into the version's card (kept: records of ways this machine cannot run)."""
    from service.hosting.engines import missing_from_version

    if calibration is not None and can_quantize():
        quantize_int8(version_dir, calibration)
    card = ModelCard.read(version_dir)
    fresh = evaluate_precisions(version_dir, card, split)
    measured = {(r.runtime, r.precision) for r in fresh}
    kept = [  # a record of a way whose model the version no longer has goes
        r
        for r in card.precisions
        if (r.runtime, r.precision) not in measured and not missing_from_version(version_dir, r.runtime, r.precision)
    ]
    card.precisions = [*fresh, *kept]
    card.write(version_dir)
    return card


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("version_dirs", type=Path, nargs="+", help="<repository>/<model>/<version> directories")
    parser.add_argument("--data-dir", help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--no-quantize", action="store_true", help="keep the versions' int8 models as they are")
    args = parser.parse_args(argv)
    data = load_fashion_mnist(args.data_dir)
    calibration = None if args.no_quantize else calibration_images(data.train)
    if calibration is not None and not can_quantize():
        logger.warning("NNCF is not installed (pip install '.[quantize]'): no int8 model is written")
    for version_dir in args.version_dirs:
        card = record_precisions(version_dir, data.test, calibration)
        reference = card.recorded(*REFERENCE)
        for record in card.precisions:
            change = (record.accuracy - reference.accuracy) * 100 if reference else float("nan")
            logger.info("%s: %s/%s %.2f%% (%+.2f pp vs float32) on %s", version_dir, record.runtime,
                        record.precision, record.accuracy * 100, change + 0.0, record.device)  # fmt: skip


if __name__ == "__main__":
    main()
