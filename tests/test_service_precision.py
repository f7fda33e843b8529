"""Runtime and precision per version: the accuracy gate, forced choices, timings, buckets and answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract import ModelCard, PrecisionAccuracy
from models.data import to_model_input
from service.app import create_app
from service.core.settings import Settings
from service.hosting.planner import (
    PlanOptions,
    StartupError,
    check_supported,
    gate,
    ladder,
    measured_buckets,
    pad_targets,
    wanted,
)
from tests.conftest import BUNDLED_MODELS


def _record(runtime: str, precision: str, accuracy: float) -> PrecisionAccuracy:
    return PrecisionAccuracy(runtime=runtime, precision=precision, accuracy=accuracy, samples=10_000,
                             device="test CPU", evaluated="2026-01-01T00:00:00+00:00")  # fmt: skip


@pytest.fixture(scope="module")
def card(bundled_repository: Path) -> ModelCard:
    return ModelCard.read(bundled_repository / "fashion_cnn" / "1")


# -- the gate and the settings (no model runs) ------------------------------------------------------
def test_gate_refuses_a_recorded_drop_over_the_limit(card: ModelCard):
    made_up = card.model_copy(
        update={
            "precisions": [
                _record("tensorflow", "fp32", 0.9302),
                _record("tensorflow", "bf16", 0.9270),
                _record("openvino", "fp32", 0.9295),
            ]
        }
    )
    reason = gate(made_up, ("tensorflow", "bf16"), max_drop_pp=0.1)
    assert reason is not None and "0.32 pp below" in reason and "CNN_MAX_ACCURACY_DROP=0.1" in reason
    assert gate(made_up, ("tensorflow", "bf16"), max_drop_pp=0.5) is None
    assert gate(made_up, ("openvino", "fp32"), max_drop_pp=0.1) is None  # 0.07 pp
    assert "no recorded accuracy" in gate(made_up, ("openvino", "bf16"), max_drop_pp=0.1)
    assert gate(made_up, ("tensorflow", "fp32"), max_drop_pp=0.0) is None  # the reference always passes


def test_forcing_what_this_machine_cannot_run_is_a_startup_error():
    def no_bf16(runtime: str, precision: str) -> str | None:
        return "no bfloat16 instructions" if precision == "bf16" else None

    with pytest.raises(StartupError, match=r"CNN_PRECISION=bf16 cannot run.*no bfloat16 instructions"):
        check_supported(PlanOptions(precision="bf16"), no_bf16)
    check_supported(PlanOptions(), no_bf16)  # auto: the others are offered
    check_supported(PlanOptions(runtime="openvino"), no_bf16)  # openvino/fp32 is left
    assert wanted(PlanOptions(runtime="openvino", precision="fp32")) == [("openvino", "fp32")]


def test_buckets_pad_only_to_sizes_measured_faster():
    assert ladder(64) == [1, 2, 4, 8, 16, 32, 64] and ladder(48)[-2:] == [32, 48] and ladder(1) == [1]
    # batch 2 is measured faster than batch 1 (8.3 vs 4.4 ms); 4 is faster than 1 too, not than 2
    call_ms = {1: 8.3, 2: 4.4, 4: 5.0, 8: 9.0}
    assert measured_buckets(call_ms) == [2, 4]
    targets = pad_targets(8, measured_buckets(call_ms), call_ms)
    assert targets[1] == 2 and targets[2] == 2 and targets[3] == 3 and targets[8] == 8
    assert pad_targets(8, [], {1: 1.0, 2: 1.5, 4: 2.0, 8: 4.0}) == tuple(range(9))  # nothing faster: no padding
    # configured buckets (CNN_BATCH_BUCKETS): the smallest that holds the batch
    assert pad_targets(10, [2, 8], None)[1:] == (2, 2, 8, 8, 8, 8, 8, 8, 9, 10)


# -- through the app --------------------------------------------------------------------------------
def _app(repository: Path, model: str = "fashion_cnn", **settings) -> TestClient:
    settings = {"runtime": "auto", "precision": "auto", **settings}  # the tests' environment pins the reference
    return TestClient(create_app(Settings(model_repository=repository, models=[model], poll_interval_s=0,
                                          **settings)), raise_server_exceptions=False)  # fmt: skip


@pytest.fixture()
def drop_repository(tmp_path: Path, bundled_repository: Path) -> Path:
    """The bundled fashion_cnn with a card saying OpenVINO float32 loses 0.5 pp (made up)."""
    target = tmp_path / "fashion_cnn" / "1"
    shutil.copytree(bundled_repository / "fashion_cnn" / "1", target)
    card = ModelCard.read(target)
    reference = card.recorded("tensorflow", "fp32")
    card.precisions = [reference, _record("openvino", "fp32", reference.accuracy - 0.005)]
    card.write(target)
    return tmp_path


def test_served_on_the_fastest_candidate_that_passes_the_gate(drop_repository: Path):
    with _app(drop_repository) as client:
        plan = client.get("/api/v1/models/fashion_cnn").json()["serving"]
    refused = {(r["runtime"], r["precision"]): r["reason"] for r in plan["refused"]}
    assert "0.50 pp below" in refused[("openvino", "fp32")]
    assert "no recorded accuracy" in refused[("tensorflow", "bf16")] or "bfloat16" in refused[("tensorflow", "bf16")]
    assert (plan["runtime"], plan["precision"]) == ("tensorflow", "fp32") and plan["chosen_by"] == "only candidate"
    assert [size for size in plan["timings"][0]["call_ms"]] == ["1", "2", "4", "8", "16", "32", "64"]


def test_a_forced_choice_the_gate_refuses_fails_the_version_with_the_reason(drop_repository: Path):
    with _app(drop_repository, runtime="openvino", precision="fp32") as client:
        detail = client.get("/api/v1/models/fashion_cnn").json()
        predict = client.post("/v1/models/fashion_cnn:predict", json={"instances": [np.zeros((28, 28, 1)).tolist()]})
    assert detail["state"] == "END" and "CNN_MAX_ACCURACY_DROP=0.1" in detail["error"]
    assert predict.status_code == 503 and "0.50 pp below" in predict.json()["error"]


def test_an_unsupported_forced_precision_stops_the_start(bundled_repository: Path, caplog):
    with (
        pytest.raises(StartupError, match="CNN_PRECISION=fp16 cannot run on this machine"),
        _app(bundled_repository, precision="fp16"),
    ):
        pass
    assert "cannot start: CNN_PRECISION=fp16" in caplog.text


@pytest.mark.parametrize("model", BUNDLED_MODELS)
def test_auto_reports_its_choice_everywhere_and_answers_like_float32(bundled_repository: Path, fashion, model):
    import tensorflow as tf

    images = to_model_input(fashion.test.images[:250])
    reference = tf.saved_model.load(str(bundled_repository / model / "1")).signatures["serving_default"]
    expected = reference(images=tf.constant(images))["probabilities"].numpy()
    card = ModelCard.read(bundled_repository / model / "1")
    with _app(bundled_repository, model, batch_buckets=[2, 4]) as client:
        native = client.get(f"/api/v1/models/{model}").json()["serving"]
        tfserving = client.get(f"/v1/models/{model}/metadata").json()["metadata"]["serving"]
        v2 = client.get(f"/v2/models/{model}").json()["serving"]
        answer = client.post(f"/v1/models/{model}:predict", json={"instances": images.tolist()})
    assert native == tfserving == v2
    timings = {(t["runtime"], t["precision"]): t for t in native["timings"]}
    assert (native["runtime"], native["precision"]) == min(timings, key=lambda k: timings[k]["score_ms"])
    assert ("tensorflow", "fp32") in timings and ("openvino", "fp32") in timings  # both recorded in the card
    assert native["buckets"] == [2, 4] and native["buckets_from"] == "CNN_BATCH_BUCKETS"
    assert native["reference_accuracy"] == pytest.approx(card.metrics["test_accuracy"])
    assert native["accuracy"] >= native["reference_accuracy"] - 0.001
    served = np.array(answer.json()["predictions"])
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.99
    # bfloat16 moves the last digits, 8-bit activations a little more (int8: 0.11 at most, measured on these
    # images); neither moves the answer
    assert np.abs(served - expected).max() < (0.2 if native["precision"] == "int8" else 0.05)


def test_a_runtime_that_fails_or_is_missing_leaves_the_others(bundled_repository: Path, monkeypatch):
    import tensorflow as tf

    from service.hosting import engines
    from service.hosting.planner import plan_serving

    version = bundled_repository / "lenet5" / "1"
    saved_model, card = tf.saved_model.load(str(version)), ModelCard.read(version)

    def broken(self, images):
        raise RuntimeError("device lost")

    monkeypatch.setattr(engines.OpenVino, "predict", broken)
    engine, plan, targets = plan_serving(saved_model, card, version, PlanOptions(max_batch_size=8))
    refused = {(r.runtime, r.precision): r.reason for r in plan.refused}
    assert "failed to build or run" in refused[("openvino", "fp32")] and plan.runtime == "tensorflow"
    assert engine.predict(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 10) and len(targets) == 9

    monkeypatch.setattr(
        engines, "unsupported_reason", lambda r, p: "OpenVINO is not installed" if r == "openvino" else None
    )
    _, plan, _ = plan_serving(
        saved_model, card, version, PlanOptions(runtime="auto", precision="fp32", max_batch_size=8)
    )
    assert (plan.runtime, plan.precision, plan.chosen_by) == ("tensorflow", "fp32", "only candidate")
    assert [(r.runtime, r.precision, r.reason) for r in plan.refused] == [
        ("openvino", "fp32", "OpenVINO is not installed")
    ]


def test_openvino_runs_a_residual_network_with_many_variables(tmp_path):
    """77 variables (13 convolutions with batch normalization): more than OpenVINO's own SavedModel
    reader finds; the engine converts the loaded signature instead."""
    pytest.importorskip("openvino")
    import tensorflow as tf

    from models import architectures
    from models.data import CLASS_NAMES
    from models.export import export_model
    from service.hosting import engines

    version = export_model(
        architectures.build("fashion_resnet"),
        tmp_path,
        "resnet",
        architecture="fashion_resnet",
        class_names=CLASS_NAMES,
    )
    saved_model, card = tf.saved_model.load(str(version)), ModelCard.read(version)
    assert len(saved_model.signatures["serving_default"].variables) >= 77
    builder = engines.Builder(saved_model, card, version)
    images = np.random.default_rng(0).random((5, 28, 28, 1), dtype=np.float32)
    reference = builder.build("tensorflow", "fp32").predict(images)
    np.testing.assert_allclose(builder.build("openvino", "fp32").predict(images), reference, atol=1e-4)


class _Recorded:
    """An OpenVINO compiled model whose infer requests note which compile ran each call."""

    def __init__(self, compiled, name: str, log: list[str], before=None) -> None:
        self.compiled, self.name, self.log, self.before = compiled, name, log, before

    def create_infer_request(self):
        request, recorded = self.compiled.create_infer_request(), self

        class Request:
            def infer(self, inputs):
                if recorded.before is not None:
                    recorded.before()
                recorded.log.append(recorded.name)
                return request.infer(inputs)

        return Request()


def test_openvino_runs_a_call_that_overlaps_another_on_streams_with_the_same_answers(bundled_repository: Path):
    """A lone call runs on the compile for every core; a call made while another runs goes to the
    streams compile, once concurrent calls are allowed, and so does the next, until one runs alone; both
    compiles answer alike."""
    pytest.importorskip("openvino")
    import os
    import threading

    import tensorflow as tf

    from service.hosting import engines

    if (os.cpu_count() or 1) < 2:
        pytest.skip("OpenVINO makes one stream on one core: no streams compile")

    version = bundled_repository / "lenet5" / "1"
    saved_model, card = tf.saved_model.load(str(version)), ModelCard.read(version)
    engine = engines.Builder(saved_model, card, version).build("openvino", "fp32")
    images = np.random.default_rng(0).random((16, *card.input_shape), dtype=np.float32)
    assert engine.allow_concurrent_calls(1) == 1
    lone = engine.predict(images)
    assert engine.allow_concurrent_calls(3, [images]) == 3
    log: list[str] = []
    overlapped = threading.Event()
    (lone_compiled, lone_output), (streams_compiled, streams_output) = engine._compiled[False], engine._compiled[True]
    engine._compiled[False] = (_Recorded(lone_compiled, "every core", log, lambda: overlapped.wait(5)), lone_output)
    engine._compiled[True] = (_Recorded(streams_compiled, "streams", log, overlapped.set), streams_output)
    engine._local = threading.local()  # this thread's infer request from the first call is of the old compile
    answers: dict[str, np.ndarray] = {}
    first = threading.Thread(target=lambda: answers.setdefault("first", engine.predict(images)))
    first.start()  # its call waits (in the model) until the second has run
    answers["second"] = engine.predict(images)
    first.join(5)
    assert log == ["streams", "every core"]
    np.testing.assert_allclose(answers["first"], lone, atol=1e-6)
    np.testing.assert_allclose(answers["second"], lone, atol=1e-5)
    # Right after calls overlapped, a call that finds the model free still runs on the streams; once one
    # has run alone from start to end, the next gets every core again.
    assert engine.predict(images).shape == (16, 10) and log[2:] == ["streams"]
    assert engine.predict(images).shape == (16, 10) and log[2:] == ["streams", "every core"]


def test_the_plan_says_how_many_calls_run_at_once_and_the_batcher_has_a_thread_for_each(bundled_repository: Path):
    import threading

    import tensorflow as tf

    from service.hosting.planner import plan_serving

    version = bundled_repository / "lenet5" / "1"
    saved_model, card = tf.saved_model.load(str(version)), ModelCard.read(version)
    _, plan, _ = plan_serving(
        saved_model, card, version, PlanOptions(runtime="tensorflow", precision="fp32", max_batch_size=8)
    )
    assert plan.concurrent_calls == 1  # a TensorFlow call already spreads over every core
    pytest.importorskip("openvino")
    _, plan, _ = plan_serving(saved_model, card, version, PlanOptions(runtime="openvino", precision="fp32",
                                                             max_batch_size=8, concurrent_calls=3))  # fmt: skip
    assert plan.concurrent_calls == 3
    earlier = set(threading.enumerate())  # batch threads of apps that other tests closed may linger
    with _app(bundled_repository, "lenet5", runtime="openvino", precision="fp32", max_concurrent_batches=2) as client:
        served = client.get("/api/v1/models/lenet5").json()["serving"]
        threads = [t.name for t in set(threading.enumerate()) - earlier if t.name.startswith("batch-lenet5:1-")]
    assert served["concurrent_calls"] == 2 and len(threads) == 2


def test_int8_runs_the_versions_quantized_model_and_is_refused_without_it(tmp_path: Path, bundled_repository: Path,
                                                                          fashion):  # fmt: skip
    pytest.importorskip("openvino")
    import tensorflow as tf

    from contract import INT8_MODEL
    from service.hosting.planner import PlanError, plan_serving

    version = tmp_path / "fashion_cnn" / "1"
    shutil.copytree(bundled_repository / "fashion_cnn" / "1", version)
    saved_model, card = tf.saved_model.load(str(version)), ModelCard.read(version)
    images = to_model_input(fashion.test.images[:500])
    reference = saved_model.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()

    engine, plan, _ = plan_serving(saved_model, card, version, PlanOptions(precision="int8", max_batch_size=8))
    assert (plan.runtime, plan.precision, plan.accuracy) == (
        "openvino",
        "int8",
        card.recorded("openvino", "int8").accuracy,
    )
    assert "OpenVINO only" in {(r.runtime, r.precision): r.reason for r in plan.refused}[("tensorflow", "int8")]
    answers = np.concatenate([engine.predict(images[i : i + 8]) for i in range(0, len(images), 8)])
    assert (answers.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.98  # 8-bit: nearly every answer
    assert not np.array_equal(answers, reference)  # and not the float32 model under another name

    shutil.rmtree(version / INT8_MODEL.parent)
    with pytest.raises(PlanError, match=r"openvino/int8: the version has no quantized model \(openvino_int8/model.xml"):
        plan_serving(saved_model, card, version, PlanOptions(precision="int8", max_batch_size=8))
