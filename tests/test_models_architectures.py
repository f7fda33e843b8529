"""The registered architectures match their published descriptions."""

from __future__ import annotations

import keras
import pytest

from models import architectures


def test_fashion_cnn_matches_the_description():
    model = architectures.build("fashion_cnn")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [
        (64, (7, 7)), (128, (3, 3)), (128, (3, 3)), (256, (3, 3)), (256, (3, 3)),
    ]  # fmt: skip
    assert all(c.padding == "same" and c.activation.__name__ == "relu" for c in convs)
    assert all(isinstance(c.kernel_initializer, keras.initializers.HeNormal) for c in convs)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D", "MaxPooling2D", "Conv2D", "Conv2D", "MaxPooling2D",
        "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [128, 64, 10] and dense[-1].activation.__name__ == "softmax"
    assert [d.rate for d in model.layers if isinstance(d, keras.layers.Dropout)] == [0.5, 0.5]


def test_lenet5_shapes():
    model = architectures.build("lenet5")
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["pad"] == (32, 32, 1)
    assert shapes["C1"] == (28, 28, 6) and shapes["S2"] == (14, 14, 6)
    assert shapes["C3"] == (10, 10, 16) and shapes["S4"] == (5, 5, 16)
    assert shapes["C5"] == (1, 1, 120) and shapes["F6"] == (84,) and shapes["predictions"] == (10,)
    assert isinstance(model.get_layer("S2"), keras.layers.AveragePooling2D)


def test_depthpool_cnn_uses_depth_pool_and_global_average_pooling():
    model = architectures.build("depthpool_cnn")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"DepthPool", "GlobalAveragePooling2D"} <= kinds
    assert tuple(model.get_layer("depth_pool").output.shape[1:]) == (14, 14, 32)


def test_fashion_resnet_stages_and_shortcuts():
    model = architectures.build("fashion_resnet")
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["stem_relu"] == (28, 28, 24)
    assert shapes["stage1_block2_relu2"] == (28, 28, 24)
    assert shapes["stage2_block2_relu2"] == (14, 14, 48)
    assert shapes["stage3_block2_relu2"] == (7, 7, 96)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 6  # three stages of two residual blocks
    # only the first block of stages 2 and 3 changes the shape, so only they project the shortcut
    projections = [layer.name for layer in model.layers if layer.name.endswith("_proj")]
    assert projections == ["stage2_block1_proj", "stage3_block1_proj"]
    assert all(model.get_layer(name).strides == (2, 2) for name in projections)
    assert all(len({tuple(t.shape) for t in add.input}) == 1 for add in adds)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(not conv.use_bias for conv in convs)  # batch normalization supplies the bias
    assert [type(layer).__name__ for layer in model.layers[-2:]] == ["GlobalAveragePooling2D", "Dense"]


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        architectures.build("vgg")
