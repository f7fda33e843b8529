"""The bare floor (bench.floor_server): it reads the JSON and binary bodies of the benchmark's scenarios into the
images the service would run, and the report sets its 64-image rates against the engine's batch-64 rate."""

import json

import numpy as np
import pytest
import simdjson

from bench.floor_server import _numbers, _v2_images
from bench.run import _floor_targets

IMAGES = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)


def test_v2_json_data_is_read_into_the_declared_shape():
    body = json.dumps(
        {"inputs": [{"name": "images", "shape": [3, 28, 28, 1], "datatype": "FP32", "data": IMAGES.ravel().tolist()}]}
    ).encode()
    images = _v2_images(body, None)
    assert images.dtype == np.float32 and images.shape == IMAGES.shape
    np.testing.assert_array_equal(images, IMAGES)


def test_a_v2_binary_part_is_taken_as_it_is():
    header = json.dumps(
        {"inputs": [{"name": "images", "shape": [3, 28, 28, 1], "datatype": "FP32",
                     "parameters": {"binary_data_size": IMAGES.nbytes}}]}
    ).encode()  # fmt: skip
    images = _v2_images(header + IMAGES.tobytes(), str(len(header)).encode())
    np.testing.assert_array_equal(images, IMAGES)


def test_tf_serving_rows_are_flattened_in_order():
    rows = simdjson.Parser().parse(json.dumps({"instances": IMAGES.tolist()}).encode())["instances"]
    np.testing.assert_array_equal(_numbers(rows).reshape(IMAGES.shape), IMAGES)


def test_a_body_that_is_not_the_declared_shape_is_refused():
    body = json.dumps({"inputs": [{"name": "images", "shape": [2, 28, 28, 1], "datatype": "FP32", "data": [0.5]}]})
    with pytest.raises(ValueError, match="reshape"):
        _v2_images(body.encode(), None)


def _measurement(server: str, scenario: str, images_per_s: float) -> dict:
    return {"server": server, "scenario": scenario, "connections": 8, "images_per_s": images_per_s}


def test_each_64_image_floor_run_is_reported_against_the_engine():
    results = {
        "measurements": [_measurement("floor", "d", 9_000.0), _measurement("floor", "j", 8_000.0)],
        "engine_limit": {"sweep": [{"batch_size": 64, "images_per_s": 10_000.0}], "best": {"images_per_s": 11_000.0}},
    }

    def target(name: str, measured: float | None, goal: str, ok: bool | None) -> dict:
        return {"name": name, "measured": measured}

    rows = {row["name"]: row["measured"] for row in _floor_targets(results, target, 64)}
    assert rows == {
        "d, 64 images: bare gRPC floor / engine in-process, batch 64": pytest.approx(0.9),
        "j, 64 images: bare TF Serving JSON floor / engine in-process, batch 64": pytest.approx(0.8),
    }
