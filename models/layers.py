"""Custom layers."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="models")
class DepthPool(keras.layers.Layer):
    """Max pooling across channels: every ``pool_size`` consecutive channels become one.

    ``(batch, h, w, c)`` → ``(batch, h, w, c // pool_size)``; ``pool_size`` must divide ``c``.
    """

    def __init__(self, pool_size: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(pool_size) < 1:
            raise ValueError(f"DepthPool pool_size must be a positive integer, got {pool_size}")
        self.pool_size = int(pool_size)

    def build(self, input_shape) -> None:
        channels = input_shape[-1]
        if channels is None or channels % self.pool_size:
            raise ValueError(
                f"DepthPool pool_size {self.pool_size} must divide the channel count, got {channels} channels"
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.pool_size)

    def call(self, inputs):
        shape = ops.shape(inputs)
        channels = inputs.shape[-1]
        grouped = ops.reshape(inputs, (*shape[:-1], channels // self.pool_size, self.pool_size))
        return ops.max(grouped, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool_size}
