"""The layer summary against hand-computed values (none of them taken from the bundled models)."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from models import architectures
from models.layers import DepthPool
from models.summary import conv_output_size, summarize


def chain(input_shape, *stack) -> keras.Model:
    return keras.Sequential([keras.Input(shape=input_shape), *stack])


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "expected"),
    [(28, 5, 1, "valid", 24), (28, 5, 1, "same", 28), (28, 3, 2, "same", 14), (28, 3, 2, "valid", 13),
     (7, 2, 2, "valid", 3), (7, 2, 2, "same", 4), (150, 5, 3, "valid", 49)],
)  # fmt: skip
def test_conv_output_size(size, kernel, stride, padding, expected):
    assert conv_output_size(size, kernel, stride, padding) == expected


def test_conv_200_maps_on_150x100_rgb():
    """200 maps of 150×100 with 5×5 kernels on RGB: 12 MB per instance, 225 million multiply-adds."""
    info = summarize(chain((150, 100, 3), layers.Conv2D(200, 5, padding="same"))).layers[0]
    assert info.output_shape == [150, 100, 200]
    assert info.params == (5 * 5 * 3 + 1) * 200 == 15_200
    assert info.mult_adds == 150 * 100 * 200 * (5 * 5 * 3) == 225_000_000
    assert info.memory_bytes == 200 * 150 * 100 * 4 == 12_000_000
    assert (info.kernel_size, info.strides, info.padding) == ([5, 5], [1, 1], "same")
    assert info.receptive_field == [5, 5] and info.jump == [1, 1]


def test_valid_and_strided_convolutions_then_pooling():
    summary = summarize(
        chain(
            (28, 28, 1),
            layers.Conv2D(6, 5, activation="tanh"),  # valid: 24×24×6
            layers.MaxPooling2D(2),  # 12×12×6
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),  # ceil(12/2) = 6
            layers.AveragePooling2D(3, strides=1),  # valid: (6-3+1) = 4
            layers.Conv2D(8, 3, strides=2),  # valid: floor((4-3+2)/2) = 1
        )
    )
    conv1, pool1, conv2, pool2, conv3 = summary.layers
    assert conv1.output_shape == [24, 24, 6] and conv1.activation == "tanh"
    assert conv1.params == 6 * (25 + 1) and conv1.mult_adds == 24 * 24 * 6 * 25
    assert conv1.memory_bytes == 24 * 24 * 6 * 4
    assert pool1.output_shape == [12, 12, 6] and pool1.params == 0 and pool1.mult_adds == 0
    assert pool1.kernel_size == [2, 2] and pool1.strides == [2, 2] and pool1.padding == "valid"
    assert conv2.output_shape == [6, 6, 16] and conv2.mult_adds == 6 * 6 * 16 * (3 * 3 * 6)
    assert conv2.params == 16 * (3 * 3 * 6 + 1)
    assert pool2.output_shape == [4, 4, 16]
    assert conv3.output_shape == [1, 1, 8] and conv3.mult_adds == 1 * 1 * 8 * (3 * 3 * 16)
    # receptive field r += (f - 1) * jump; jump *= stride
    assert [info.receptive_field[0] for info in summary.layers] == [5, 6, 10, 18, 26]
    assert [info.jump[0] for info in summary.layers] == [1, 2, 4, 4, 8]


def test_depth_pool_and_global_pooling_and_dense():
    summary = summarize(
        chain(
            (10, 10, 3),
            layers.Conv2D(64, 3, padding="same"),
            DepthPool(4),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax"),
        )
    )
    conv, depth, gap, dense = summary.layers
    assert depth.type == "DepthPool" and depth.output_shape == [10, 10, 16]
    assert depth.params == 0 and depth.mult_adds == 0 and depth.memory_bytes == 10 * 10 * 16 * 4
    assert depth.receptive_field == conv.receptive_field == [3, 3]
    assert gap.output_shape == [16] and gap.receptive_field == [10, 10] and gap.jump is None
    assert dense.params == 16 * 10 + 10 and dense.mult_adds == 160 and dense.memory_bytes == 40
    assert dense.activation == "softmax"
    assert summary.total_params == conv.params + dense.params == (27 + 1) * 64 + 170
    assert summary.total_mult_adds == 10 * 10 * 64 * 27 + 160


def test_depth_pool_values_and_divisibility():
    import numpy as np

    x = np.arange(2 * 1 * 1 * 6, dtype="float32").reshape(2, 1, 1, 6)
    out = keras.ops.convert_to_numpy(DepthPool(3)(x))
    assert out.shape == (2, 1, 1, 2)
    assert out[0, 0, 0].tolist() == [2.0, 5.0] and out[1, 0, 0].tolist() == [8.0, 11.0]
    with pytest.raises(ValueError, match="must divide the channel count"):
        chain((4, 4, 6), DepthPool(4))


@pytest.mark.parametrize("name", sorted(architectures.ARCHITECTURES))
def test_totals_agree_with_keras(name):
    model = architectures.build(name)
    summary = summarize(model)
    assert summary.total_params == model.count_params()
    layers_ = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [info.params for info in summary.layers] == [layer.count_params() for layer in layers_]
    assert [info.name for info in summary.layers] == [layer.name for layer in layers_]
    assert summary.layers[-1].output_shape == [10]


def test_branches_and_merges():
    """A residual block: the shortcut's strided 1×1 projection and the main path meet in an Add."""
    inputs = keras.Input(shape=(8, 8, 2), name="images")
    a = layers.Conv2D(4, 3, padding="same", name="a")(inputs)  # 8×8×4, RF 3, jump 1
    main = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False, name="main")(a)  # 4×4, RF 3+2=5, jump 2
    main = layers.BatchNormalization(name="bn")(main)
    shortcut = layers.Conv2D(4, 1, strides=2, name="proj")(a)  # 4×4, RF 3, jump 2
    merged = layers.Add(name="add")([main, shortcut])
    wide = layers.Concatenate(name="concat")([merged, layers.Conv2D(2, 3, padding="same", name="side")(merged)])
    outputs = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D(name="gap")(wide))
    summary = summarize(keras.Model(inputs, outputs, name="branchy"))
    rows = {info.name: info for info in summary.layers}

    assert rows["a"].inputs == ["images"] and rows["main"].inputs == ["a"] and rows["proj"].inputs == ["a"]
    assert rows["add"].inputs == ["bn", "proj"] and rows["concat"].inputs == ["add", "side"]
    assert rows["main"].mult_adds == 4 * 4 * 4 * (3 * 3 * 4) and rows["main"].params == 3 * 3 * 4 * 4
    assert rows["proj"].mult_adds == 4 * 4 * 4 * 4 and rows["proj"].params == 4 * 4 + 4
    assert rows["bn"].mult_adds == 4 * 4 * 4 and rows["bn"].params == 4 * 4  # γ, β, moving mean and variance
    assert rows["bn"].trainable_params == 2 * 4
    assert rows["add"].mult_adds == 0 and rows["add"].params == 0 and rows["add"].memory_bytes == 4 * 4 * 4 * 4
    assert rows["concat"].output_shape == [4, 4, 6] and rows["concat"].memory_bytes == 4 * 4 * 6 * 4
    # receptive fields along both paths; a merge sees what its widest input sees
    assert (rows["a"].receptive_field, rows["a"].jump) == ([3, 3], [1, 1])
    assert (rows["main"].receptive_field, rows["main"].jump) == ([5, 5], [2, 2])
    assert rows["bn"].receptive_field == [5, 5]
    assert (rows["proj"].receptive_field, rows["proj"].jump) == ([3, 3], [2, 2])
    assert (rows["add"].receptive_field, rows["add"].jump) == ([5, 5], [2, 2])
    assert rows["side"].receptive_field == [5 + 2 * 2] * 2
    assert rows["concat"].receptive_field == [9, 9]
    assert rows["gap"].receptive_field == [8, 8] and rows["gap"].jump is None
    assert summary.total_params == sum(info.params for info in summary.layers)
    assert summary.total_mult_adds == sum(info.mult_adds for info in summary.layers)
