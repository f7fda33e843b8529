"""Recording a version's accuracy per runtime and precision in its model card."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contract import ModelCard, PrecisionAccuracy
from models.data import Split
from models.evaluate import evaluate_saved_model
from models.precision import record_precisions
from service.hosting import engines


def test_records_every_way_this_machine_runs_and_keeps_the_others(tmp_path: Path, bundled_repository: Path, fashion):
    version = tmp_path / "lenet5" / "1"
    shutil.copytree(bundled_repository / "lenet5" / "1", version)
    card = ModelCard.read(version)
    gpu_record = PrecisionAccuracy(runtime="tensorflow", precision="fp16", accuracy=0.5, samples=10, device="a GPU",
                                   evaluated="2026-01-01T00:00:00+00:00")  # fmt: skip
    card.precisions = [gpu_record]
    card.write(version)
    split = Split(fashion.test.images[:2000], fashion.test.labels[:2000])

    recorded = record_precisions(version, split)

    assert ModelCard.read(version).precisions == recorded.precisions
    keys = [(r.runtime, r.precision) for r in recorded.precisions]
    runnable = [(r, p) for r, p in keys if engines.unsupported_reason(r, p) is None]
    assert keys[0] == ("tensorflow", "fp32") and ("openvino", "fp32") in keys
    assert len(runnable) == len(keys) - 1 and recorded.precisions[-1] == gpu_record  # not runnable here: kept
    reference = evaluate_saved_model(version, split)
    assert recorded.recorded("tensorflow", "fp32").accuracy == reference.accuracy
    for record in recorded.precisions[:-1]:
        assert record.samples == 2000 and record.device == engines.device_name()
        assert record.accuracy == pytest.approx(reference.accuracy, abs=0.005)  # the same network, rounded otherwise


def test_bundled_cards_record_float32_as_their_test_accuracy(bundled_repository: Path):
    for name in ("fashion_cnn", "lenet5"):
        card = ModelCard.read(bundled_repository / name / "1")
        reference = card.recorded("tensorflow", "fp32")
        assert reference is not None and reference.samples == 10_000
        assert reference.accuracy == card.metrics["test_accuracy"]
