"""Recording a version's accuracy per runtime and precision in its model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from contract import INT8_MODEL, ModelCard, PrecisionAccuracy
from models.data import Split
from models.evaluate import evaluate_saved_model
from models.precision import record_precisions
from models.quantize import calibration_images
from service.hosting import engines


def test_records_every_way_this_machine_runs_and_keeps_the_others(tmp_path: Path, bundled_repository: Path, fashion):
    version = tmp_path / "lenet5" / "1"
    shutil.copytree(bundled_repository / "lenet5" / "1", version)
    shutil.rmtree(version / INT8_MODEL.parent)
    card = ModelCard.read(version)
    gpu_record = PrecisionAccuracy(runtime="tensorflow", precision="fp16", accuracy=0.5, samples=10, device="a GPU",
                                   evaluated="2026-01-01T00:00:00+00:00")  # fmt: skip
    card.precisions = [gpu_record]
    card.write(version)
    split = Split(fashion.test.images[:2000], fashion.test.labels[:2000])

    recorded = record_precisions(version, split, calibration_images(fashion.train, count=100))

    assert ModelCard.read(version).precisions == recorded.precisions
    keys = [(r.runtime, r.precision) for r in recorded.precisions]
    runnable = [(r, p) for r, p in keys if engines.unsupported_reason(r, p) is None]
    assert keys[0] == ("tensorflow", "fp32") and ("openvino", "fp32") in keys and ("openvino", "int8") in keys
    assert (version / INT8_MODEL).is_file()  # quantized first, then evaluated like every other way
    assert len(runnable) == len(keys) - 1 and recorded.precisions[-1] == gpu_record  # not runnable here: kept
    reference = evaluate_saved_model(version, split)
    assert recorded.recorded("tensorflow", "fp32").accuracy == reference.accuracy
    for record in recorded.precisions[:-1]:
        assert record.samples == 2000 and record.device == engines.device_name()
        assert record.accuracy == pytest.approx(reference.accuracy, abs=0.005)  # the same network, rounded otherwise


def test_without_calibration_images_no_int8_model_is_written_or_recorded(tmp_path: Path, bundled_repository: Path,
                                                                         fashion):  # fmt: skip
    version = tmp_path / "lenet5" / "1"
    shutil.copytree(bundled_repository / "lenet5" / "1", version)
    shutil.rmtree(version / INT8_MODEL.parent)

    recorded = record_precisions(version, Split(fashion.test.images[:500], fashion.test.labels[:500]))

    assert not (version / INT8_MODEL).exists()
    assert recorded.recorded("openvino", "fp32") is not None
    assert recorded.recorded("openvino", "int8") is None  # the bundled card's record went with the model


def test_calibration_images_come_from_the_split_given_as_model_input(fashion):
    images = calibration_images(fashion.train, count=300)
    assert images.shape == (300, 28, 28, 1) and images.dtype == np.float32 and 0 <= images.min() < images.max() <= 1
    np.testing.assert_array_equal(images, calibration_images(fashion.train, count=300))  # seeded: repeatable
    assert len(calibration_images(Split(fashion.test.images[:10], fashion.test.labels[:10]))) == 10


def test_bundled_cards_record_float32_as_their_test_accuracy(bundled_repository: Path):
    for name in ("fashion_cnn", "lenet5"):
        card = ModelCard.read(bundled_repository / name / "1")
        reference = card.recorded("tensorflow", "fp32")
        assert reference is not None and reference.samples == 10_000
        assert reference.accuracy == card.metrics["test_accuracy"]
        int8 = card.recorded("openvino", "int8")  # and the int8 model beside it, which that record measured
        assert int8 is not None and int8.samples == 10_000 and (bundled_repository / name / "1" / INT8_MODEL).is_file()
