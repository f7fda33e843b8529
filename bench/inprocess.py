"""The limit: a model called in-process, no HTTP, at several batch sizes.

Run as ``python -m bench.inprocess --model <version dir> --images <images.npy>``; prints one JSON
object: img/s per batch size, the best one, the batch-1 call time, and the predicted classes of
the given images (to check the servers' answers against).

By default the SavedModel's ``serving_default`` runs on TensorFlow in float32. ``--runtime`` and
``--precision`` time the engine the service builds for that pair instead (the one it serves with), and
``--openvino-ir`` also writes the OpenVINO conversion the service compiles, for the same-engine peer.
An engine that runs several calls at once as the service serves it (OpenVINO's streams) is also timed
with that many threads calling it back to back; each batch size's row is the faster of the two ways.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from contract import INT8_MODEL, REFERENCE, ModelCard
from models.data import to_model_input

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


Predict = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_dir: Path, runtime: str, precision: str) -> tuple[Predict, int]:
    """Batch → probabilities: the service's own engine for ``(runtime, precision)``, and how many calls it
    runs at once as the service serves it (the default ``CNN_MAX_CONCURRENT_BATCHES``)."""
    import tensorflow as tf

    from service.core.settings import Settings
    from service.hosting.engines import Builder

    saved_model = tf.saved_model.load(str(model_dir))
    engine = Builder(saved_model, ModelCard.read(model_dir), model_dir).build(runtime, precision)
    return engine.predict, engine.allow_concurrent_calls(Settings.model_fields["max_concurrent_batches"].default)


def export_openvino_ir(model_dir: Path, xml_path: Path, precision: str) -> Path:
    """The OpenVINO model the service compiles for ``model_dir`` in ``precision``, saved as IR at ``xml_path``:
    the version's quantized model for int8, else the loaded signature converted, in float32 weights."""
    import openvino
    import tensorflow as tf

    from service.hosting.engines import convert_to_openvino

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    if precision == "int8":
        quantized = model_dir / INT8_MODEL
        for source in (quantized, quantized.with_suffix(".bin")):
            shutil.copyfile(source, xml_path.with_suffix(source.suffix))
        return xml_path
    saved_model = tf.saved_model.load(str(model_dir))  # kept referenced: the signature's variables live in it
    openvino.save_model(convert_to_openvino(saved_model), xml_path, compress_to_fp16=False)
    return xml_path


def throughput(
    call: Predict, images: np.ndarray, batch_size: int, seconds: float, threads: int = 1
) -> dict[str, float]:
    """img/s of back-to-back calls on ``batch_size`` images from ``threads`` threads (each at least 3 calls
    after 2 warm-up calls), and the CPU time (all the process's threads) each image costs."""
    batch = np.resize(images, (batch_size, *images.shape[1:]))
    for _ in range(2):
        call(batch)
    counts = [0] * threads
    started, cpu = time.perf_counter(), time.process_time()

    def calling(index: int) -> None:
        while counts[index] < 3 or time.perf_counter() - started < seconds:
            call(batch)
            counts[index] += 1

    workers = [threading.Thread(target=calling, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed, cpu, calls = time.perf_counter() - started, time.process_time() - cpu, sum(counts)
    return {
        "batch_size": batch_size,
        "calls_at_once": threads,
        "images_per_s": calls * batch_size / elapsed,
        "call_ms": elapsed / calls * threads * 1e3,
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
    call, at_once = load_predictor(model_dir, *engine)
    load_s = time.perf_counter() - loaded
    predicted = call(images).argmax(axis=1).tolist()
    times = single_call_ms(call, images, 300)
    sweep = [throughput(call, images, size, seconds) for size in batch_sizes]
    if at_once > 1:
        overlapping = [throughput(call, images, size, seconds, at_once) for size in batch_sizes]
        pairs = zip(sweep, overlapping, strict=True)
        sweep = [max(one, both, key=lambda row: row["images_per_s"]) for one, both in pairs]
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
    parser.add_argument("--precision", default=REFERENCE[1], help="the engine's precision (fp32, bf16, fp16, int8)")
    parser.add_argument("--openvino-ir", type=Path, help="also write the OpenVINO IR (.xml) the service compiles")
    args = parser.parse_args(argv)
    if args.openvino_ir:
        export_openvino_ir(args.model, args.openvino_ir, args.precision)
    images = to_model_input(np.load(args.images))
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(json.dumps(measure(args.model, images, sizes, args.seconds, (args.runtime, args.precision))))


if __name__ == "__main__":
    main()
