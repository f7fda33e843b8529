"""The committed models: loaded with plain TensorFlow and re-evaluated on the 10,000 test images."""

from __future__ import annotations

import json

import pytest

from models.evaluate import evaluate_saved_model

# The same SavedModel can flip a handful of near-tie predictions between CPUs (different oneDNN kernels).
TOLERANCE = 0.0005


@pytest.mark.parametrize(("name", "minimum"), [("fashion_cnn", 0.92), ("fashion_resnet", 0.94), ("lenet5", 0.85)])
def test_bundled_model_accuracy_matches_its_card(bundled_repository, fashion, name, minimum):
    version_dir = bundled_repository / name / "1"
    card = json.loads((version_dir / "model_card.json").read_text())
    result = evaluate_saved_model(version_dir, fashion.test)
    assert result.samples == card["metrics"]["test_samples"] == 10_000
    assert result.accuracy >= minimum
    assert abs(result.accuracy - card["metrics"]["test_accuracy"]) <= TOLERANCE


def test_the_repository_holds_the_three_bundled_models(bundled_repository):
    assert sorted(path.name for path in bundled_repository.iterdir() if (path / "1").is_dir()) == [
        "fashion_cnn", "fashion_resnet", "lenet5",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["fashion_cnn", "fashion_resnet"])
def test_bundled_model_is_small_and_has_no_optimizer_state(bundled_repository, name):
    variables = bundled_repository / name / "1" / "variables" / "variables.data-00000-of-00001"
    params = json.loads((bundled_repository / name / "1" / "model_card.json").read_text())["summary"]
    # float32 weights only: 4 bytes per parameter plus a small header, no Nadam slots
    assert variables.stat().st_size < params["total_params"] * 4 * 1.05
