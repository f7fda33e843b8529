"""Quantize a version's serving signature to 8 bits for OpenVINO (NNCF post-training quantization).

The convolutions' and dense layers' weights and activations become int8; their scales are calibrated on
:data:`CALIBRATION_IMAGES` training images (never test images: the test set then measures the quantized
model's accuracy, :mod:`models.precision`). The result is OpenVINO IR in the version directory
(:data:`contract.INT8_MODEL`), where the service finds it (``openvino/int8``). TensorFlow Serving ignores it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from contract import INT8_MODEL
from models.data import Split, to_model_input

logger = logging.getLogger(__name__)

CALIBRATION_IMAGES = 300  # NNCF's default subset size


def calibration_images(split: Split, count: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A seeded random sample of the split's images as model input, ``(count, 28, 28, 1)`` float32."""
    chosen = np.random.default_rng(seed).choice(len(split), size=min(count, len(split)), replace=False)
    return to_model_input(split.images[np.sort(chosen)])


def quantize_int8(version_dir: Path, images: np.ndarray) -> Path:
    """Write the version's int8 model (OpenVINO IR) calibrated on ``images``; return the ``.xml`` path."""
    import nncf
    import openvino
    import tensorflow as tf

    from service.hosting.engines import convert_to_openvino

    started = time.perf_counter()
    saved_model = tf.saved_model.load(str(version_dir))  # kept referenced: the signature's variables live in it
    model = convert_to_openvino(saved_model)  # as the service converts it
    dataset = nncf.Dataset([image[np.newaxis] for image in images])  # one image per item, as NNCF advises
    quantized = nncf.quantize(model, dataset, subset_size=len(images))
    target = version_dir / INT8_MODEL
    target.parent.mkdir(exist_ok=True)
    openvino.save_model(quantized, target, compress_to_fp16=False)
    logger.info("%s: int8 model calibrated on %d images in %.1fs", target, len(images), time.perf_counter() - started)
    return target
