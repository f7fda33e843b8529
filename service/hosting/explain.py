"""Why a model chose a class: Grad-CAM, saliency and occlusion heatmaps over a SavedModel.

The service only has the exported SavedModel, not the Keras model. Gradients between a layer and the
class score need both in one graph, so :class:`Explainer` freezes the ``feature_maps`` signature (its
variables become constants), imports that graph into a new function and differentiates the class
score there: one call returns every spatial layer's activations and gradients and the input
gradient. Occlusion needs no gradients: it runs occluded copies of the image through the model.

Every heatmap is ``(n, height, width)`` at the model's input size, in [0, 1] (1: most important for
the target class). Everything here runs in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from contract import FEATURE_MAPS_SIGNATURE, ModelCard
from service.core.request import ExplainMethod, ExplainSpec, Explanation


def gradcam_layers(card: ModelCard) -> list[str]:
    """The layers Grad-CAM can explain, in network order: from the first convolution on, every exported
    layer with a spatial map (convolutions, and in residual networks their normalisations, activations
    and the merges that end each block)."""
    if card.summary is None:
        return []
    exported = set(card.feature_layers)
    first_conv = next((i for i, layer in enumerate(card.summary.layers) if "Conv" in layer.type), None)
    if first_conv is None:
        return []
    return [
        layer.name
        for layer in card.summary.layers[first_conv:]
        if layer.name in exported and len(layer.output_shape) == 3
    ]


def default_gradcam_layer(card: ModelCard) -> str | None:
    """The last of :func:`gradcam_layers` with a map of more than one pixel (a 1×1 map cannot say where)
    that is not a pooling layer: the last convolution of a plain CNN, the last block's output of a ResNet."""
    assert card.summary is not None
    rows = {layer.name: layer for layer in card.summary.layers}
    layers = gradcam_layers(card)
    spatial = [name for name in layers if rows[name].output_shape[0] * rows[name].output_shape[1] > 1]
    preferred = [name for name in spatial if "Pooling" not in rows[name].type]
    return (preferred or spatial or layers or [None])[-1]


def _scale_each_by_peak(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] by its own maximum; an all-zero map stays zero."""
    maps = np.maximum(maps, 0.0).astype(np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


def _upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(n, h, w)`` → ``(n, *size)``, bilinear (the usual Grad-CAM upsampling)."""
    import tensorflow as tf

    if maps.shape[1:] == size:
        return maps
    return tf.image.resize(maps[..., None], size, method="bilinear").numpy()[..., 0]


class Explainer:
    """Gradients, class scores and occlusion over one loaded SavedModel (built on first use, then reused).

    All three methods explain the class *score*, the logit before the softmax (or the output itself when
    the last layer is not a softmax): a confident model's probability is 1.0 in float32 whatever one
    changes, its logit is not.
    """

    def __init__(self, saved_model: Any, card: ModelCard, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self.card = card
        self.gradcam_layers = gradcam_layers(card)
        self._predict = predict
        self._gradients, self._scores = _graph_functions(saved_model, card, self.gradcam_layers)

    def explain(self, images: np.ndarray, spec: ExplainSpec) -> Explanation:
        probabilities = self._predict(images)
        targets = probabilities.argmax(axis=1) if spec.target is None else np.full(len(images), spec.target)
        layer = None
        if spec.method is ExplainMethod.occlusion:
            heatmaps = self.occlusion(images, targets, spec.patch_size, spec.stride)
        elif spec.method is ExplainMethod.saliency:
            heatmaps = self.saliency(images, targets)
        else:
            layer = spec.layer or default_gradcam_layer(self.card)
            heatmaps = self.gradcam(images, targets, layer)
        return Explanation(spec.method, layer, targets.astype(np.int64), heatmaps, probabilities, images)

    def _grads(self, images: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        import tensorflow as tf

        onehot = tf.one_hot(targets, len(self.card.class_names), dtype=tf.float32)
        return self._gradients(tf.constant(images, tf.float32), onehot)

    def class_scores(self, images: np.ndarray) -> np.ndarray:
        """Every class's score (logit) ``(n, classes)``."""
        import tensorflow as tf

        return self._scores(tf.constant(images, tf.float32)).numpy()

    def gradcam(self, images: np.ndarray, targets: np.ndarray, layer: str) -> np.ndarray:
        """ReLU of the layer's channels weighted by their mean gradient of the class score."""
        out = self._grads(images, targets)
        index = self.gradcam_layers.index(layer)
        activations, gradients = out["activations"][index].numpy(), out["gradients"][index].numpy()
        weights = gradients.mean(axis=(1, 2), keepdims=True)  # (n, 1, 1, channels)
        cam = (weights * activations).sum(axis=-1)
        return _scale_each_by_peak(_upsample(np.maximum(cam, 0.0), self.card.input_shape[:2]))

    def saliency(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Input gradient × input, positive part: the first-order estimate of how much the class score
        falls when a pixel goes to 0 (the background). The bare gradient ranks background pixels, which
        are 0 already, as highly as the object's (see the README's deletion test)."""
        gradient = self._grads(images, targets)["input_gradient"].numpy()
        return _scale_each_by_peak((gradient * images).sum(axis=-1))

    def occlusion(self, images: np.ndarray, targets: np.ndarray, patch: int, stride: int) -> np.ndarray:
        """How much the class score falls when a ``patch``×``patch`` square set to 0 (the background)
        covers each pixel, averaged over the squares that cover it."""
        height, width = images.shape[1:3]
        corners = [
            (top, left)
            for top in range(0, max(height - patch, 0) + 1, stride)
            for left in range(0, max(width - patch, 0) + 1, stride)
        ]
        rows = np.arange(len(images))
        baseline = self.class_scores(images)[rows, targets]
        heat = np.zeros((len(images), height, width), np.float32)
        cover = np.zeros((height, width), np.float32)
        for top, left in corners:
            cover[top : top + patch, left : left + patch] += 1
        chunk = max(1, 256 // len(images))  # occluded copies per model call: about 256 images
        for start in range(0, len(corners), chunk):
            batch = corners[start : start + chunk]
            occluded = np.repeat(images[None], len(batch), axis=0)  # (corners, n, h, w, c)
            for i, (top, left) in enumerate(batch):
                occluded[i, :, top : top + patch, left : left + patch] = 0.0
            scores = self.class_scores(occluded.reshape(-1, *images.shape[1:])).reshape(len(batch), len(images), -1)
            drops = baseline[None] - scores[:, rows, targets]  # (corners, n)
            for i, (top, left) in enumerate(batch):
                heat[:, top : top + patch, left : left + patch] += drops[i][:, None, None]
        return _scale_each_by_peak(heat / np.maximum(cover, 1.0))


def _graph_functions(saved_model: Any, card: ModelCard, layers: list[str]) -> tuple[Callable, Callable]:
    """Two functions over the frozen ``feature_maps`` graph: ``(images, onehot) → {activations,
    gradients, input_gradient}``, the gradients of ``sum(scores · onehot)`` with respect to the layers'
    activations and the input, and ``images → scores``, every class's score."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    signature = saved_model.signatures[FEATURE_MAPS_SIGNATURE]
    frozen = convert_variables_to_constants_v2(signature)
    outputs = tf.nest.pack_sequence_as(signature.structured_outputs, frozen.outputs)

    def source(tensor: Any) -> Any:  # a signature output is an Identity of the layer's own tensor
        while tensor.op.type == "Identity":
            tensor = tensor.op.inputs[0]
        return tensor

    final = source(outputs[card.feature_layers[-1]])
    score = final.op.inputs[0] if final.op.type == "Softmax" else final
    fetch = [source(outputs[name]).name for name in layers] + [score.name]
    graph = frozen.graph.as_graph_def()
    input_name = frozen.inputs[0].name

    def gradients(images: Any, onehot: Any) -> dict[str, Any]:
        *activations, scores = tf.graph_util.import_graph_def(
            graph, input_map={input_name: images}, return_elements=fetch, name="model"
        )
        class_score = tf.reduce_sum(scores * onehot, axis=1)
        grads = tf.gradients(class_score, [*activations, images])
        return {"activations": activations, "gradients": grads[:-1], "input_gradient": grads[-1]}

    def scores(images: Any) -> Any:
        (result,) = tf.graph_util.import_graph_def(
            graph, input_map={input_name: images}, return_elements=[score.name], name="model"
        )
        return result

    image_spec = tf.TensorSpec([None, *card.input_shape], tf.float32)
    onehot_spec = tf.TensorSpec([None, len(card.class_names)], tf.float32)
    return (
        tf.compat.v1.wrap_function(gradients, [image_spec, onehot_spec]),
        tf.compat.v1.wrap_function(scores, [image_spec]),
    )
