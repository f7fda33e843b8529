"""Per-layer architecture summary: shapes, parameters, multiply-adds, memory and receptive field.

Formulas (per instance, float32 activations):
- output size: ``ceil(i / s)`` for "same" padding, ``floor((i - f + s) / s)`` for "valid";
- Conv2D multiply-adds: ``out_h × out_w × filters × (f_h × f_w × in_channels)``;
- Dense multiply-adds: ``in_features × units``; pooling, padding, reshaping: 0;
- activation memory: ``prod(output_shape) × 4`` bytes;
- receptive field (per axis): ``r_out = r_in + (f - 1) × j_in`` and jump ``j_out = j_in × s``.
  Layers that see the whole map (Flatten, Dense, global pooling) cover the whole input; their jump is None.

Rows are :class:`contract.LayerSummary`, which the service returns as they are.
The walk assumes a chain of layers (a ``Sequential`` model or a functional model without branches).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from contract import LayerSummary, ModelSummary

BYTES_PER_FLOAT32 = 4
_GLOBAL_LAYERS = ("Flatten", "Dense", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Spatial output length of a convolution or pooling window along one axis."""
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        return (size - kernel + stride) // stride
    raise ValueError(f"unknown padding {padding!r}")


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(value), int(value)]


def _window(layer: keras.layers.Layer) -> tuple[list[int] | None, list[int] | None]:
    if hasattr(layer, "kernel_size"):
        return _pair(layer.kernel_size), _pair(layer.strides)
    if hasattr(layer, "pool_size") and hasattr(layer, "strides"):
        return _pair(layer.pool_size), _pair(layer.strides)
    return None, None


def _mult_adds(layer: keras.layers.Layer, in_shape: tuple, out_shape: list[int]) -> int:
    kind = type(layer).__name__
    if kind == "Conv2D":
        kh, kw = _pair(layer.kernel_size)
        out_h, out_w, maps = out_shape
        return out_h * out_w * maps * kh * kw * int(in_shape[-1]) // int(getattr(layer, "groups", 1))
    if kind == "DepthwiseConv2D":
        kh, kw = _pair(layer.kernel_size)
        out_h, out_w, maps = out_shape
        return out_h * out_w * maps * kh * kw
    if kind == "Dense":
        return int(in_shape[-1]) * int(out_shape[-1]) * math.prod(out_shape[:-1])
    return 0


def _activation_name(layer: keras.layers.Layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def summarize(model: keras.Model) -> ModelSummary:
    """Summarize every layer of a built Keras model (see the module docstring for the formulas)."""
    input_shape = [int(d) for d in model.inputs[0].shape[1:]]
    image_extent = input_shape[:2] if len(input_shape) >= 2 else input_shape[:1] * 2
    summary = ModelSummary(name=model.name, input_shape=input_shape)
    rf, jump = [1, 1], [1, 1]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_shape = tuple(layer.input.shape[1:])
        out_shape = [int(d) for d in layer.output.shape[1:]]
        kernel, strides = _window(layer)
        kind = type(layer).__name__
        if kind in _GLOBAL_LAYERS or jump is None:
            rf, jump = list(image_extent), None
        elif kernel is not None and len(kernel) == 2:
            dilation = _pair(getattr(layer, "dilation_rate", 1))
            rf = [r + (dilation[a] * (kernel[a] - 1)) * jump[a] for a, r in enumerate(rf)]
            jump = [j * strides[a] for a, j in enumerate(jump)]
        params = int(layer.count_params())
        trainable = int(sum(math.prod(w.shape) for w in layer.trainable_weights))
        info = LayerSummary(
            name=layer.name,
            type=kind,
            output_shape=out_shape,
            kernel_size=kernel,
            strides=strides,
            padding=getattr(layer, "padding", None) if isinstance(getattr(layer, "padding", None), str) else None,
            activation=_activation_name(layer),
            params=params,
            trainable_params=trainable,
            mult_adds=_mult_adds(layer, in_shape, out_shape),
            memory_bytes=math.prod(out_shape) * BYTES_PER_FLOAT32,
            receptive_field=list(rf),
            jump=list(jump) if jump is not None else None,
        )
        summary.layers.append(info)
        summary.total_params += params
        summary.trainable_params += trainable
        summary.total_mult_adds += info.mult_adds
        summary.total_activation_bytes += info.memory_bytes
    return summary


def format_table(summary: ModelSummary) -> str:
    """A fixed-width text table of a summary, for logs and the CLI."""
    header = f"{'layer':<14}{'type':<24}{'output':<16}{'k/s':<10}{'params':>10}{'mult-adds':>14}{'memory':>11}{'RF':>8}"
    rows = [header, "-" * len(header)]
    for info in summary.layers:
        window = f"{info.kernel_size[0]}/{info.strides[0]}" if info.kernel_size else ""
        shape = "×".join(map(str, info.output_shape))
        rows.append(
            f"{info.name:<14}{info.type:<24}{shape:<16}{window:<10}{info.params:>10,}{info.mult_adds:>14,}"
            f"{info.memory_bytes:>11,}{info.receptive_field[0]:>8}"
        )
    rows.append(
        f"{'total':<64}{summary.total_params:>10,}{summary.total_mult_adds:>14,}{summary.total_activation_bytes:>11,}"
    )
    return "\n".join(rows)
