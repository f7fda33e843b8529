"""Network definitions and a registry of them by name.

Every architecture takes Fashion-MNIST images as float32 ``(28, 28, 1)`` in [0, 1] and ends in a
10-way softmax, so all exported models share one input contract.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import keras
from keras import layers

from models.layers import DepthPool

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10

_conv = partial(layers.Conv2D, kernel_size=3, padding="same", activation="relu", kernel_initializer="he_normal")


def fashion_cnn(input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> keras.Model:
    """Conv 64@7×7 → MaxPool → 2×Conv 128 → MaxPool → 2×Conv 256 → MaxPool → Dense 128/64 with dropout."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="images"),
            _conv(64, kernel_size=7, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            _conv(128, name="conv2"),
            _conv(128, name="conv3"),
            layers.MaxPooling2D(2, name="pool2"),
            _conv(256, name="conv4"),
            _conv(256, name="conv5"),
            layers.MaxPooling2D(2, name="pool3"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", kernel_initializer="he_normal", name="fc1"),
            layers.Dropout(0.5, name="dropout1"),
            layers.Dense(64, activation="relu", kernel_initializer="he_normal", name="fc2"),
            layers.Dropout(0.5, name="dropout2"),
            layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="fashion_cnn",
    )


def lenet5(input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> keras.Model:
    """LeNet-5: 28×28 zero-padded to 32×32, C1 6@5×5, S2, C3 16@5×5, S4, C5 120@5×5, F6 84, softmax."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="images"),
            layers.ZeroPadding2D(2, name="pad"),
            layers.Conv2D(6, 5, activation="tanh", name="C1"),
            layers.AveragePooling2D(2, name="S2"),
            layers.Conv2D(16, 5, activation="tanh", name="C3"),
            layers.AveragePooling2D(2, name="S4"),
            layers.Conv2D(120, 5, activation="tanh", name="C5"),
            layers.Flatten(name="flatten"),
            layers.Dense(84, activation="tanh", name="F6"),
            layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="lenet5",
    )


def depthpool_cnn(input_shape=INPUT_SHAPE, num_classes: int = NUM_CLASSES) -> keras.Model:
    """A compact CNN that halves channels with :class:`DepthPool` and ends in global average pooling."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="images"),
            _conv(32, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            _conv(64, name="conv2"),
            DepthPool(2, name="depth_pool"),
            _conv(128, name="conv3"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.GlobalAveragePooling2D(name="global_pool"),
            layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="depthpool_cnn",
    )


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "fashion_cnn": fashion_cnn,
    "lenet5": lenet5,
    "depthpool_cnn": depthpool_cnn,
}


def build(name: str, **kwargs) -> keras.Model:
    """Build a registered architecture by name."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return factory(**kwargs)
