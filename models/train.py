"""Training CLI: ``python -m models.train --arch fashion_cnn --epochs 20``.

Trains on the training split, selects the epoch with the best validation accuracy, exports the
SavedModel + model card, then evaluates the *exported* model once on the held-out test set.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from contract import DEFAULT_REPOSITORY, ModelCard
from contract.machine import cpu_cores, cpu_model
from models import architectures
from models.architectures import INPUT_SHAPE, NUM_CLASSES
from models.data import Split, load_fashion_mnist, to_model_input
from models.evaluate import evaluate_saved_model
from models.export import export_model, publish
from models.precision import record_precisions
from models.quantize import calibration_images
from models.summary import format_table, summarize

logger = logging.getLogger("models.train")


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch: metrics, learning rate, elapsed time and ETA for the run."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        elapsed = time.monotonic() - self.started
        eta = elapsed / (epoch + 1) * (self.epochs - epoch - 1)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logger.info(
            "epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.2e  elapsed %.0fs  eta %.0fs",
            epoch + 1, self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_loss", float("nan")), logs.get("val_accuracy", float("nan")), lr, elapsed, eta,
        )  # fmt: skip


def augmentation(*, flip: bool, shift: int, seed: int, erase: float = 0.0) -> keras.Sequential | None:
    """Random horizontal flips, random shifts of up to ``shift`` pixels (zero-filled) and, with
    probability ``erase``, random erasing (a rectangle of 2-33% of the image filled with noise), per image."""
    steps: list[keras.layers.Layer] = []
    if flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if shift:
        factor = shift / INPUT_SHAPE[0]
        steps.append(
            keras.layers.RandomTranslation(factor, factor, fill_mode="constant", interpolation="nearest", seed=seed + 1)
        )
    if erase:
        steps.append(keras.layers.RandomErasing(factor=erase, value_range=(0.0, 1.0), seed=seed + 2))
    return keras.Sequential(steps, name="augmentation") if steps else None


def make_dataset(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    flip: bool,
    seed: int,
    shift: int = 0,
    erase: float = 0.0,
    one_hot: bool = False,
) -> tf.data.Dataset:
    labels = keras.utils.to_categorical(split.labels, NUM_CLASSES) if one_hot else split.labels
    data = tf.data.Dataset.from_tensor_slices((to_model_input(split.images), labels))
    if shuffle:
        data = data.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size)
    augment = augmentation(flip=flip, shift=shift, erase=erase, seed=seed)
    if augment is not None:
        data = data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1 (a probability, a smoothing factor)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fashion_cnn", choices=sorted(architectures.ARCHITECTURES))
    parser.add_argument("--name", help="model name in the repository (default: the architecture name)")
    parser.add_argument("--version", type=int, help="version number (default: next free)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version directory")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--data-dir", type=Path, help="IDX directory (default: $FASHION_MNIST_DIR or Debian's)")
    parser.add_argument("--epochs", type=int, help="default: the architecture's recipe (models.architectures)")
    parser.add_argument("--batch-size", type=int, help="default: the architecture's recipe")
    parser.add_argument("--lr", type=float, help="initial Nadam learning rate (default: the architecture's recipe)")
    parser.add_argument("--min-lr", type=float, default=1e-5, help="learning rate at the end of the cosine decay")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="disable random horizontal flips")
    parser.add_argument("--shift", type=int, help="random shifts of up to N pixels (default: the recipe's)")
    parser.add_argument("--erase", type=fraction, help="random-erasing probability per image (default: the recipe's)")
    parser.add_argument(
        "--label-smoothing", type=fraction, help="cross-entropy label smoothing (default: the recipe's)"
    )
    parser.add_argument("--patience", type=int, help="early-stopping patience on val accuracy (default: the recipe's)")
    parser.add_argument("--validation-size", type=int, default=5000)
    parser.add_argument("--train-limit", type=int, help="use only the first N training images (smoke runs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--deterministic", action="store_true", help="enable TF op determinism (slower)")
    parser.add_argument("--checkpoint-dir", type=Path, help="where the best weights are kept during training")
    args = parser.parse_args(argv)
    recipe = architectures.RECIPES.get(args.arch, architectures.Recipe())
    for field in dataclasses.fields(recipe):
        if getattr(args, field.name) is None:
            setattr(args, field.name, getattr(recipe, field.name))
    return args


def train(args: argparse.Namespace) -> Path:
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    data = load_fashion_mnist(args.data_dir, validation_size=args.validation_size, seed=args.seed)
    train_split = data.train
    if args.train_limit:
        train_split = Split(train_split.images[: args.train_limit], train_split.labels[: args.train_limit])

    model = architectures.build(args.arch)
    logger.info("%s\n%s", model.name, format_table(summarize(model)))
    steps = int(np.ceil(len(train_split) / args.batch_size)) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=args.min_lr / args.lr)
    # label smoothing needs one-hot targets (the sparse loss has no such option)
    one_hot = args.label_smoothing > 0
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
        if one_hot
        else keras.losses.SparseCategoricalCrossentropy()
    )
    model.compile(optimizer=keras.optimizers.Nadam(learning_rate=schedule), loss=loss, metrics=["accuracy"])
    checkpoint_dir = args.checkpoint_dir or args.repository.parent / ".checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    callbacks = [
        EpochLogger(args.epochs),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint_dir / f"{args.name or args.arch}.best.weights.h5"),
            monitor="val_accuracy", save_best_only=True, save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience, restore_best_weights=True),
    ]  # fmt: skip
    started = time.monotonic()
    history = model.fit(
        make_dataset(
            train_split,
            args.batch_size,
            shuffle=True,
            flip=args.flip,
            shift=args.shift,
            erase=args.erase,
            one_hot=one_hot,
            seed=args.seed,
        ),
        validation_data=make_dataset(data.validation, 500, shuffle=False, flip=False, one_hot=one_hot, seed=args.seed),
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    training_time = time.monotonic() - started
    val_acc = history.history["val_accuracy"]
    best_epoch = int(np.argmax(val_acc)) + 1

    training = {
        "epochs_run": len(val_acc),
        "epochs_planned": args.epochs,
        "best_epoch": best_epoch,
        "batch_size": args.batch_size,
        "early_stopping_patience": args.patience,
        "optimizer": "Nadam",
        "learning_rate": {"schedule": "cosine", "initial": args.lr, "final": args.min_lr},
        "augmentation": (["random horizontal flip"] if args.flip else [])
        + ([f"random shift of up to {args.shift} px"] if args.shift else [])
        + ([f"random erasing with probability {args.erase}"] if args.erase else []),
        "label_smoothing": args.label_smoothing,
        "train_samples": len(train_split),
        "validation_samples": len(data.validation),
        "seed": args.seed,
        "training_time_s": round(training_time, 1),
        "machine": {"cpu": cpu_model(), "cores": cpu_cores(), "keras_backend": keras.backend.backend()},
    }
    staged = export_model(
        model,
        args.repository,
        args.name or args.arch,
        architecture=args.arch,
        class_names=data.class_names,
        version=args.version,
        overwrite=args.overwrite,
        metrics={"validation_accuracy": round(float(val_acc[best_epoch - 1]), 4)},
        training=training,
        publish_now=False,
    )
    # The test set is used exactly once, on the exported artefact, and the card records that figure;
    # then the version is published whole (a watching server never sees it without its test figures).
    test = evaluate_saved_model(staged, data.test)
    card = ModelCard.read(staged)
    card.metrics.update(
        test_accuracy=test.accuracy, test_loss=round(test.loss, 4), test_correct=test.correct, test_samples=test.samples
    )
    card.write(staged)
    # int8 model and accuracy per runtime and precision: what the service may serve on
    record_precisions(staged, data.test, calibration_images(data.train))
    target = publish(staged, overwrite=args.overwrite)
    logger.info(
        "best epoch %d (val acc %.4f); test accuracy %.4f (%d/%d), loss %.4f; %.0fs; exported to %s",
        best_epoch, val_acc[best_epoch - 1], test.accuracy, test.correct, test.samples, test.loss,
        training_time, target,
    )  # fmt: skip
    return target


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(parse_args(argv))


if __name__ == "__main__":
    main()
