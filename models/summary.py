"""Per-layer architecture summary: shapes, parameters, multiply-adds, memory and receptive field.

Formulas (per instance, float32 activations):
- output size: ``ceil(i / s)`` for "same" padding, ``floor((i - f + s) / s)`` for "valid";
- Conv2D multiply-adds: ``out_h × out_w × filters × (f_h × f_w × in_channels)``;
- Dense multiply-adds: ``in_features × units``; BatchNormalization: one per output value (its
  inference-time scale and shift); pooling, padding, reshaping, activations, merges (``Add``): 0;
- activation memory: ``prod(output_shape) × 4`` bytes;
- receptive field (per axis): ``r_out = r_in + (f - 1) × j_in`` and jump ``j_out = j_in × s``.
  Layers that see the whole map (Flatten, Dense, global pooling) cover the whole input; their jump is None.
  Where branches merge (``Add``, ``Concatenate``) the output sees the largest field of its inputs.

Rows are :class:`contract.LayerSummary`, which the service returns as they are. Models may branch
(functional models with residual shortcuts, say); each row names the layers it reads.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import keras

from contract import LayerSummary, ModelCard, ModelSummary

logger = logging.getLogger(__name__)

BYTES_PER_FLOAT32 = 4
_View = tuple[list[int] | None, list[int] | None]  # receptive field and jump of one layer's output; None: global
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
    if kind == "BatchNormalization":  # inference: one scale-and-shift per activation (unless folded)
        return math.prod(out_shape)
    return 0


def _activation_name(layer: keras.layers.Layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def _inbound(layer: keras.layers.Layer) -> list[str]:
    """Names of the layers (or model inputs) whose outputs ``layer`` reads, in call order."""
    tensors = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    return [tensor._keras_history.operation.name for tensor in tensors]


def _field_of_view(
    kind: str, kernel: list[int] | None, strides: list[int] | None, dilation: list[int], seen: list[_View]
) -> _View:
    """Receptive field and jump of a layer's output from those of its inputs.

    A merge (``Add``, ``Concatenate``, …) sees what any of its inputs sees: the largest field; its
    inputs share one grid in any model that builds, and the coarsest jump is kept.
    """
    if kind in _GLOBAL_LAYERS or any(jump is None for _, jump in seen):
        return None, None
    rf = [max(field[a] for field, _ in seen) for a in range(2)]
    jump = [max(step[a] for _, step in seen) for a in range(2)]  # type: ignore[index]
    if kernel is not None and len(kernel) == 2 and strides is not None:
        rf = [r + dilation[a] * (kernel[a] - 1) * jump[a] for a, r in enumerate(rf)]
        jump = [j * strides[a] for a, j in enumerate(jump)]
    return rf, jump


def summarize(model: keras.Model) -> ModelSummary:
    """Summarize every layer of a built Keras model (see the module docstring for the formulas).

    Layers are walked in the model's topological order; each row names the layers it reads, so
    branches (a residual block's shortcut, say) and the merges that join them are described as built.
    """
    input_shape = [int(d) for d in model.inputs[0].shape[1:]]
    image_extent = input_shape[:2] if len(input_shape) >= 2 else input_shape[:1] * 2
    summary = ModelSummary(name=model.name, input_shape=input_shape)
    views: dict[str, _View] = {tensor._keras_history.operation.name: ([1, 1], [1, 1]) for tensor in model.inputs}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = _inbound(layer)
        in_shape = tuple((layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input).shape[1:])
        out_shape = [int(d) for d in layer.output.shape[1:]]
        kernel, strides = _window(layer)
        kind = type(layer).__name__
        dilation = _pair(getattr(layer, "dilation_rate", 1))
        rf, jump = _field_of_view(kind, kernel, strides, dilation, [views[name] for name in inputs])
        views[layer.name] = (rf, jump)
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
            receptive_field=list(rf) if rf is not None else list(image_extent),
            jump=jump,
            inputs=inputs,
        )
        summary.layers.append(info)
        summary.total_params += params
        summary.trainable_params += trainable
        summary.total_mult_adds += info.mult_adds
        summary.total_activation_bytes += info.memory_bytes
    return summary


def format_table(summary: ModelSummary) -> str:
    """A fixed-width text table of a summary, for logs and the CLI."""
    width = max([14, *(len(info.name) + 2 for info in summary.layers)])
    header = (
        f"{'layer':<{width}}{'type':<24}{'output':<16}{'k/s':<10}{'params':>10}{'mult-adds':>14}{'memory':>11}"
        f"{'RF':>8}  inputs"
    )
    rows = [header, "-" * len(header)]
    for info in summary.layers:
        window = f"{info.kernel_size[0]}/{info.strides[0]}" if info.kernel_size else ""
        shape = "×".join(map(str, info.output_shape))
        rows.append(
            f"{info.name:<{width}}{info.type:<24}{shape:<16}{window:<10}{info.params:>10,}{info.mult_adds:>14,}"
            f"{info.memory_bytes:>11,}{info.receptive_field[0]:>8}  {', '.join(info.inputs)}"
        )
    rows.append(
        f"{'total':<{width + 50}}{summary.total_params:>10,}{summary.total_mult_adds:>14,}"
        f"{summary.total_activation_bytes:>11,}"
    )
    return "\n".join(rows)


def refresh_card(version_dir: Path) -> ModelSummary:
    """Recompute a version's layer summary from its registered architecture and rewrite its card (the
    summary depends on the architecture only, not on the trained weights)."""
    from models.architectures import build

    card = ModelCard.read(version_dir)
    summary = summarize(build(card.architecture))
    if summary.total_params != (card.summary.total_params if card.summary else summary.total_params):
        raise ValueError(f"{version_dir}: architecture {card.architecture!r} no longer matches the card")
    card.summary = summary
    card.write(version_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print, and rewrite in the model cards, the layer summaries "
                                     "of exported versions: python -m models.summary model_repository/*/1")  # fmt: skip
    parser.add_argument("version_dirs", nargs="+", type=Path)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for version_dir in parser.parse_args(argv).version_dirs:
        logger.info("%s\n%s", version_dir, format_table(refresh_card(version_dir)))


if __name__ == "__main__":
    main()
