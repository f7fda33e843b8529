"""Training CLI → SavedModel repository → plain-TensorFlow loading, on a short run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from models import architectures
from models.data import CLASS_NAMES
from models.export import export_model, next_version, publish
from models.train import main as train_main


@pytest.fixture(scope="module")
def trained_repository(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repository")
    train_main(["--arch", "lenet5", "--epochs", "1", "--train-limit", "512", "--repository", str(repository)])
    return repository


def test_cli_exports_a_tf_serving_layout(trained_repository):
    version_dir = trained_repository / "lenet5" / "1"
    assert [p.name for p in (trained_repository / "lenet5").iterdir()] == ["1"]  # published: no staging left
    assert (version_dir / "saved_model.pb").exists() and (version_dir / "variables").is_dir()
    card = json.loads((version_dir / "model_card.json").read_text())
    assert card["name"] == "lenet5" and card["version"] == 1 and card["architecture"] == "lenet5"
    assert card["class_names"] == list(CLASS_NAMES)
    assert card["input"]["shape"] == [-1, 28, 28, 1] and card["input"]["dtype"] == "float32"
    assert 0.0 <= card["metrics"]["test_accuracy"] <= 1.0 and card["metrics"]["test_samples"] == 10_000
    assert card["training"]["epochs_run"] == 1 and card["training"]["train_samples"] == 512
    assert [layer["name"] for layer in card["summary"]["layers"]][:3] == ["pad", "C1", "S2"]


def test_saved_model_signatures_with_plain_tensorflow(trained_repository):
    loaded = tf.saved_model.load(str(trained_repository / "lenet5" / "1"))
    images = tf.constant(np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32))
    probabilities = loaded.signatures["serving_default"](images=images)["probabilities"].numpy()
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    maps = loaded.signatures["feature_maps"](images=images)
    assert {name: tuple(t.shape[1:]) for name, t in maps.items()} == {
        "pad": (32, 32, 1), "C1": (28, 28, 6), "S2": (14, 14, 6), "C3": (10, 10, 16), "S4": (5, 5, 16),
        "C5": (1, 1, 120), "F6": (84,), "predictions": (10,),
    }  # fmt: skip
    np.testing.assert_allclose(maps["predictions"].numpy(), probabilities, rtol=1e-6)


def test_export_versions_and_overwrite(tmp_path):
    model = architectures.build("depthpool_cnn")
    first = export_model(model, tmp_path, "tiny", architecture="depthpool_cnn", class_names=CLASS_NAMES)
    assert first.name == "1" and next_version(tmp_path / "tiny") == 2
    with pytest.raises(FileExistsError):
        export_model(model, tmp_path, "tiny", architecture="depthpool_cnn", class_names=CLASS_NAMES, version=1)
    export_model(
        model, tmp_path, "tiny", architecture="depthpool_cnn", class_names=CLASS_NAMES, version=1, overwrite=True
    )
    outputs = tf.saved_model.load(str(first)).signatures["feature_maps"].structured_outputs
    assert "depth_pool" in outputs and "global_pool" in outputs
    assert (first / "variables").stat().st_size >= 0 and not (first / "optimizer").exists()


def test_export_publishes_by_rename(tmp_path):
    """Until it is published, a version lives in a hidden staging directory that no server loads."""
    model = architectures.build("depthpool_cnn")
    staged = export_model(
        model, tmp_path, "tiny", architecture="depthpool_cnn", class_names=CLASS_NAMES, publish_now=False
    )
    assert staged.name == ".1.partial" and (staged / "saved_model.pb").exists()
    assert not (tmp_path / "tiny" / "1").exists() and next_version(tmp_path / "tiny") == 1
    staged_inode = (staged / "saved_model.pb").stat().st_ino
    target = publish(staged)
    assert target == tmp_path / "tiny" / "1" and not staged.exists()
    assert (target / "saved_model.pb").stat().st_ino == staged_inode  # moved, not copied
