"""The limit: the SavedModel's ``serving_default`` called in-process, no HTTP, at several batch sizes.

Run as ``python -m bench.inprocess --model <version dir> --images <images.npy>``; prints one JSON
object: img/s per batch size, the best one, the batch-1 call time, and the predicted classes of
the given images (to check the servers' answers against).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from contract import INPUT_NAME, OUTPUT_NAME, SERVING_SIGNATURE
from models.data import to_model_input

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _signature(model_dir: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(model_dir)).signatures[SERVING_SIGNATURE]


def _call(signature, batch: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return signature(**{INPUT_NAME: tf.constant(batch)})[OUTPUT_NAME].numpy()


def throughput(signature, images: np.ndarray, batch_size: int, seconds: float) -> dict[str, float]:
    """img/s of back-to-back calls on ``batch_size`` images (at least 3 calls after 2 warm-up calls)."""
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    for _ in range(2):
        _call(signature, batch)
    calls, started = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - started < seconds:
        _call(signature, batch)
        calls += 1
    elapsed = time.perf_counter() - started
    return {"batch_size": batch_size, "images_per_s": calls * batch_size / elapsed, "call_ms": elapsed / calls * 1e3}


def single_call_ms(signature, images: np.ndarray, calls: int) -> list[float]:
    """Times (ms) of ``calls`` batch-1 calls, rotating through the images."""
    times = []
    for index in range(calls):
        one = images[index % len(images)][np.newaxis]
        started = time.perf_counter()
        _call(signature, one)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(model_dir: Path, images: np.ndarray, batch_sizes: list[int], seconds: float) -> dict:
    import tensorflow as tf

    loaded = time.perf_counter()
    signature = _signature(model_dir)
    load_s = time.perf_counter() - loaded
    predicted = _call(signature, images).argmax(axis=1).tolist()
    times = single_call_ms(signature, images, 300)
    sweep = [throughput(signature, images, size, seconds) for size in batch_sizes]
    best = max(sweep, key=lambda row: row["images_per_s"])
    return {
        "model": str(model_dir),
        "tensorflow": tf.__version__,
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
    args = parser.parse_args(argv)
    images = to_model_input(np.load(args.images))
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(json.dumps(measure(args.model, images, sizes, args.seconds)))


if __name__ == "__main__":
    main()
