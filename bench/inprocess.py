"""The limit: a model called in-process, no HTTP, at several batch sizes.

Run as ``python -m bench.inprocess --model <version dir> --images <images.npy>``; prints one JSON
object: img/s per batch size, the best one, the batch-1 call time, and the predicted classes of
the given images (to check the servers' answers against).

By default the SavedModel's ``serving_default`` runs on TensorFlow in float32. ``--runtime`` and
``--precision`` time the engine the service builds for that pair instead (the one it serves with), and
``--openvino-ir`` also writes the OpenVINO conversion the service compiles, for the same-engine peer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import REFERENCE, SERVING_SIGNATURE, ModelCard
from models.data import to_model_input

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


Predict = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_dir: Path, runtime: str, precision: str) -> Predict:
    """Batch → probabilities: the service's own engine for ``(runtime, precision)``."""
    import tensorflow as tf

    from service.hosting.engines import Builder

    saved_model = tf.saved_model.load(str(model_dir))
    return Builder(saved_model, ModelCard.read(model_dir)).build(runtime, precision).predict


def export_openvino_ir(model_dir: Path, xml_path: Path) -> Path:
    """The OpenVINO model the service compiles for ``model_dir`` (converted from the loaded signature),
    saved as IR at ``xml_path`` in float32 weights."""
    import openvino
    import tensorflow as tf

    saved_model = tf.saved_model.load(str(model_dir))  # kept referenced: the signature's variables live in it
    converted = openvino.convert_model(saved_model.signatures[SERVING_SIGNATURE], share_weights=False)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    openvino.save_model(converted, xml_path, compress_to_fp16=False)
    return xml_path


def throughput(call: Predict, images: np.ndarray, batch_size: int, seconds: float) -> dict[str, float]:
    """img/s of back-to-back calls on ``batch_size`` images (at least 3 calls after 2 warm-up calls), and
    the CPU time (all the process's threads) each image costs."""
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    for _ in range(2):
        call(batch)
    calls, started, cpu = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - started < seconds:
        call(batch)
        calls += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "batch_size": batch_size,
        "images_per_s": calls * batch_size / elapsed,
        "call_ms": elapsed / calls * 1e3,
        "cpu_ms_per_image": cpu / (calls * batch_size) * 1e3,
    }


def single_call_ms(call: Predict, images: np.ndarray, calls: int) -> list[float]:
    """Times (ms) of ``calls`` batch-1 calls, rotating through the images."""
    times = []
    for index in range(calls):
        one = images[index % len(images)][np.newaxis]
        started = time.perf_counter()
        call(one)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(
    model_dir: Path, images: np.ndarray, batch_sizes: list[int], seconds: float, engine: tuple[str, str] = REFERENCE
) -> dict:
    import tensorflow as tf

    loaded = time.perf_counter()
    call = load_predictor(model_dir, *engine)
    load_s = time.perf_counter() - loaded
    predicted = call(images).argmax(axis=1).tolist()
    times = single_call_ms(call, images, 300)
    sweep = [throughput(call, images, size, seconds) for size in batch_sizes]
    best = max(sweep, key=lambda row: row["images_per_s"])
    return {
        "model": str(model_dir),
        "tensorflow": tf.__version__,
        "engine": {"runtime": engine[0], "precision": engine[1]},
        "load_s": load_s,
        "batch1_call_ms": {
            "p50": statistics.median(times),
            "p99": float(np.percentile(times, 99)),
            "mean": statistics.fmean(times),
        },
        "sweep": sweep,
        "best": best,
        "predicted_classes": predicted,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="SavedModel version directory")
    parser.add_argument("--images", type=Path, required=True, help=".npy of uint8 (n, 28, 28) images")
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per batch size")
    parser.add_argument("--runtime", default=REFERENCE[0], help="the engine's runtime (tensorflow, openvino)")
    parser.add_argument("--precision", default=REFERENCE[1], help="the engine's precision (fp32, bf16, fp16)")
    parser.add_argument("--openvino-ir", type=Path, help="also write the OpenVINO IR (.xml) the service compiles")
    args = parser.parse_args(argv)
    if args.openvino_ir:
        export_openvino_ir(args.model, args.openvino_ir)
    images = to_model_input(np.load(args.images))
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(json.dumps(measure(args.model, images, sizes, args.seconds, (args.runtime, args.precision))))


if __name__ == "__main__":
    main()
