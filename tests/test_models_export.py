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
    train_main([
        "--arch", "lenet5", "--epochs", "1", "--train-limit", "512", "--repository", str(repository),
        "--erase", "0.5", "--label-smoothing", "0.1",
    ])  # fmt: skip
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
    assert card["training"]["label_smoothing"] == 0.1
    assert "random erasing with probability 0.5" in card["training"]["augmentation"]
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


def test_an_architecture_recipe_gives_the_defaults_and_flags_override_it():
    from models.train import parse_args

    resnet = parse_args(["--arch", "fashion_resnet"])
    recipe = architectures.RECIPES["fashion_resnet"]
    assert (resnet.epochs, resnet.batch_size, resnet.lr, resnet.shift, resnet.erase, resnet.label_smoothing) == (
        recipe.epochs, recipe.batch_size, recipe.lr, recipe.shift, recipe.erase, recipe.label_smoothing,
    )  # fmt: skip
    short = parse_args(["--arch", "fashion_resnet", "--epochs", "2", "--shift", "0"])
    assert (short.epochs, short.shift, short.batch_size) == (2, 0, recipe.batch_size)
    for bad in (["--erase", "1.5"], ["--label-smoothing", "-0.1"]):
        with pytest.raises(SystemExit):
            parse_args(["--arch", "fashion_resnet", *bad])
    plain = parse_args(["--arch", "depthpool_cnn"])
    assert (plain.epochs, plain.batch_size, plain.shift, plain.erase, plain.label_smoothing) == (20, 64, 0, 0.0, 0.0)


def test_shift_augmentation_moves_each_image_by_at_most_n_pixels():
    from models.train import augmentation

    rng = np.random.default_rng(0)
    images = np.zeros((16, 28, 28, 1), np.float32)
    images[:, 8:20, 10:18] = rng.random((16, 12, 8, 1), dtype=np.float32) + 0.1  # an object off the border
    shifted = np.asarray(augmentation(flip=False, shift=2, seed=3)(images, training=True))
    offsets = set()
    for original, moved in zip(images, shifted, strict=True):
        found = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
            if np.array_equal(np.roll(original, (dy, dx), axis=(0, 1)), moved)
        ]  # fmt: skip
        assert found, "not a whole-pixel shift of at most 2 pixels"
        offsets.add(found[0])
    assert len(offsets) > 3  # each image draws its own shift


def test_random_erasing_blanks_one_rectangle_in_the_images_it_picks():
    from models.train import augmentation

    images = np.ones((64, 28, 28, 1), np.float32)
    erased = np.asarray(augmentation(flip=False, shift=0, erase=0.5, seed=5)(images, training=True))
    changed = erased[..., 0] != 1.0
    touched = [mask for mask in changed if mask.any()]
    assert 10 < len(touched) < 54  # about half the images, each drawn on its own
    for mask in touched:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert box <= 0.34 * 28 * 28 and mask.sum() > box / 2  # one filled rectangle of at most a third
    assert np.all((erased >= 0.0) & (erased <= 1.0))  # the noise stays in the input's range


def test_label_smoothing_trains_on_one_hot_targets():
    from models.data import Split
    from models.train import make_dataset

    split = Split(np.zeros((4, 28, 28), np.uint8), np.array([0, 3, 9, 3]))
    _, labels = next(iter(make_dataset(split, 4, shuffle=False, flip=False, seed=0, one_hot=True)))
    np.testing.assert_array_equal(np.argmax(labels, axis=1), split.labels)
    assert labels.shape == (4, 10)
