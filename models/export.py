"""Export a trained Keras model to a TF-Serving-layout model repository.

``<repository>/<name>/<version>/`` is a plain SavedModel with two signatures:

- ``serving_default``: ``images`` float32 ``(-1, 28, 28, 1)`` in [0, 1] → ``probabilities`` ``(-1, classes)``;
- ``feature_maps``: the same input → one output per conv/pool/dense layer, keyed by layer name;

plus ``model_card.json`` (name, version, input contract, class names, metrics, training run, layer summary),
which is everything a server needs without importing this package.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from contract import (
    FEATURE_MAPS_SIGNATURE,
    INPUT_NAME,
    OUTPUT_NAME,
    SERVING_SIGNATURE,
    ModelCard,
    Preprocessing,
    SignatureSpec,
    TensorSpec,
)
from models.summary import summarize

logger = logging.getLogger(__name__)

# Layers whose output is not a new activation at inference time.
_PASS_THROUGH = ("InputLayer", "Dropout", "Flatten")


def feature_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers whose activations the ``feature_maps`` signature returns."""
    return [layer for layer in model.layers if type(layer).__name__ not in _PASS_THROUGH]


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version directory, starting at 1."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def input_contract(model: keras.Model) -> TensorSpec:
    shape = [-1, *(int(d) for d in model.inputs[0].shape[1:])]
    return TensorSpec(
        name=INPUT_NAME,
        dtype="float32",
        shape=shape,
        range=[0.0, 1.0],
        preprocessing=Preprocessing(
            color="grayscale",
            size=shape[1:3],
            scale="pixel / 255",
            polarity="light object on a dark background (as in Fashion-MNIST)",
        ),
    )


def staging_dir(target: Path) -> Path:
    """Where a version is written before it is published: a hidden sibling no server loads."""
    return target.with_name(f".{target.name}.partial")


def publish(staged: Path, *, overwrite: bool = False) -> Path:
    """Rename a staged version directory into place, so a watching server sees it whole or not at all."""
    target = staged.with_name(staged.name.removeprefix(".").removesuffix(".partial"))
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True or choose another version")
        shutil.rmtree(target)
    staged.rename(target)
    logger.info("Published %s", target)
    return target


def export_model(
    model: keras.Model,
    repository: str | Path,
    name: str,
    *,
    architecture: str,
    class_names: list[str] | tuple[str, ...],
    version: int | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    overwrite: bool = False,
    publish_now: bool = True,
) -> Path:
    """Write the SavedModel and its model card into a staging directory and publish it (write, then
    rename); return the version directory. With ``publish_now=False`` return the staging directory, for
    the caller to finish (say, add test metrics to the card) and :func:`publish`."""
    model_dir = Path(repository) / name
    version = version or next_version(model_dir)
    target = model_dir / str(version)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True or choose another version")
    staged = staging_dir(target)
    if staged.exists():  # left over from an interrupted export
        shutil.rmtree(staged)

    shape = [None, *model.inputs[0].shape[1:]]
    spec = tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)
    taps = feature_layers(model)
    output_layer = model.layers[-1].name
    if output_layer not in {layer.name for layer in taps}:
        raise ValueError(f"the model's last layer {output_layer!r} must produce its class probabilities")
    tap_model = keras.Model(model.inputs, {layer.name: layer.output for layer in taps})

    servable = tf.Module()
    servable.model = tap_model  # tracks every variable once; no optimizer state

    @tf.function(input_signature=[spec])
    def serve(images):
        return {OUTPUT_NAME: tap_model(images, training=False)[output_layer]}

    @tf.function(input_signature=[spec])
    def feature_maps(images):
        return tap_model(images, training=False)

    tf.saved_model.save(
        servable, str(staged), signatures={SERVING_SIGNATURE: serve, FEATURE_MAPS_SIGNATURE: feature_maps}
    )

    card = ModelCard(
        name=name,
        version=version,
        architecture=architecture,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        framework={"tensorflow": tf.__version__, "keras": keras.__version__},
        input=input_contract(model),
        output=TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[-1, len(class_names)]),
        class_names=list(class_names),
        signatures={
            SERVING_SIGNATURE: SignatureSpec(inputs=[INPUT_NAME], outputs=[OUTPUT_NAME]),
            FEATURE_MAPS_SIGNATURE: SignatureSpec(inputs=[INPUT_NAME], outputs=[layer.name for layer in taps]),
        },
        metrics=metrics or {},
        training=training or {},
        summary=summarize(model),
    )
    card.write(staged)
    logger.info("Exported %s version %s to %s", name, version, staged)
    return publish(staged, overwrite=overwrite) if publish_now else staged
