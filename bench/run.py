"""Benchmark orchestrator: ``python -m bench.run``.

Measures, in one run on 127.0.0.1: the in-process limit of the SavedModel in float32 TensorFlow, then the
served model twice (``python -m service``: pinned to float32 TensorFlow, then its defaults, which pick the
fastest measured runtime and precision) and once more with a shadow version (a copy of the model that
also runs 10% of the requests in the background), the in-process limit of the engine it chose, the peers on that
same engine (Seldon MLServer with 1 and 2 parallel workers, LitServe) and a naive FastAPI server, each
driven by wrk, or h2load for gRPC; then the served model's accuracy through HTTP per runtime and
precision (:mod:`bench.accuracy`); then writes ``bench/results/{RESULTS.md,results.json,throughput.png}``
and prints a table. Each measurement also gives the server's CPU per request and, for the service, the
part of it beyond the model (the serving layer's own cost).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.accuracy import served_accuracy
from bench.grpc_load import classify_once as grpc_classify
from bench.grpc_load import run_grpc_load
from bench.payloads import Payload, build_payloads
from bench.peers import MLSERVER_WORKERS, Engine, floor_spec, litserve_spec, mlserver_name, mlserver_spec
from bench.profile import Profiler
from bench.servers import Server, ServerSpec, http_request, memory_kib, process_tree, start_server
from bench.wrk import WrkResult, run_wrk, wrk_binary
from contract.machine import cpu_flags, cpu_model

logger = logging.getLogger("bench")
GRPC_PAYLOADS = {"grpc_batch": 64, "grpc_single": 1}  # gRPC scenarios: images per call
MLSERVERS = tuple(mlserver_name(workers) for workers in MLSERVER_WORKERS)
SHADOW_FRACTION = 0.1  # served-shadow: the share of requests its shadow version also runs
SHADOW_ROUNDS = 2  # served-shadow: measurements with the shadow off and on, alternated
OBSERVED_ROUNDS = 3  # observability: runs with tracing, payload logging and neither, in turn
GIL_ROUNDS = 2  # gil: runs with the service's GIL switch interval and Python's default, in turn
PYTHON_SWITCH_INTERVAL_MS = "5"  # Python's default GIL switch interval

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GB = 1e9
MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    payload: str
    path: str
    connections: tuple[int, ...]
    servers: tuple[str, ...]

    @property
    def grpc(self) -> bool:
        return self.payload in GRPC_PAYLOADS


# -- environment -------------------------------------------------------------------------------------
def machine_busy_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores; idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tensorflow-cpu", "tensorflow", "numpy", "fastapi", "starlette", "uvicorn", "pydantic",
                    "litserve", "uvloop", "httptools", "pillow", "py-spy"):  # fmt: skip
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def mlserver_version(mlserver: Path) -> str | None:
    """The peer's version, from its own venv (``None`` when it is not installed)."""
    if not mlserver.exists():
        return None
    done = subprocess.run([str(mlserver), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip().split()[-1] if done.returncode == 0 and done.stdout.strip() else None


def uvicorn_auto_choice() -> str:
    """What uvicorn's ``auto`` loop and HTTP implementation resolve to here (the baselines use them)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"loop={loop}, http={http}"


def resolve_model(repository: Path, name: str, version: int | None) -> Path:
    model_dir = repository / name
    if version is None:
        versions_found = sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())
        if not versions_found:
            raise SystemExit(f"no versions of {name} in {repository}; train and export it first")
        version = versions_found[-1]
    path = model_dir / str(version)
    if not (path / "saved_model.pb").exists():
        raise SystemExit(f"{path} is not a SavedModel")
    return path


def model_summary(model_dir: Path) -> str:
    try:
        card = json.loads((model_dir / "model_card.json").read_text())
    except (OSError, ValueError):
        return "no model card"
    accuracy = card.get("metrics", {}).get("test_accuracy")
    text = f"architecture {card.get('architecture', '?')}"
    return text + (f", test accuracy {accuracy:.4f}" if isinstance(accuracy, float) else "")


# -- measurements ------------------------------------------------------------------------------------
class RssSampler:
    """Samples the server process tree's total RSS every ``interval`` seconds in a thread."""

    def __init__(self, server: Server, interval: float = 0.1) -> None:
        self.server, self.interval, self.peak_kib = server, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.server.tree_rss_kib())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.raw = args.output / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self.model_dir = resolve_model(args.repository, args.model, args.version)
        self.measurements: list[dict[str, Any]] = []
        self.checks: dict[str, str] = {}
        self.notes: list[str] = []
        concurrency = tuple(args.concurrency)
        top = max(concurrency)
        name = args.model
        v1, v2, native = f"/v1/models/{name}:predict", f"/v2/models/{name}/infer", f"/api/v1/models/{name}/predict"
        self.scenarios = [
            Scenario("a", "tfserving", v1, concurrency,
                     ("served-fp32", "served", "served-shadow", "naive", "litserve")),
            # For reference only: the naive server as plain ``uvicorn`` runs it, access log on.
            Scenario("a", "tfserving", v1, (top,), ("naive-logged",)),
            Scenario("b", "png", native, (top,), ("served",)),
            Scenario("c", "v2_batch", v2, (8,), ("served-fp32", "served")),
            # The same batches over gRPC: KServe v2 ModelInfer, raw FP32 contents, 8 calls in flight.
            Scenario("d", "grpc_batch", "inference.GRPCInferenceService/ModelInfer", (8,), ("served", "floor")),
            # One image per request in every protocol, the same-engine peer where it speaks it.
            Scenario("e", "v2_json", v2, (top,), ("served", "floor", *MLSERVERS)),
            Scenario("f", "v2_binary", v2, (top,), ("served", "floor")),
            Scenario("g", "png_raw", native, (top,), ("served",)),
            Scenario("h", "grpc_single", "inference.GRPCInferenceService/ModelInfer", (top,),
                     ("served", "floor", *MLSERVERS)),
            # 64 images per request as JSON.
            Scenario("i", "v2_json_batch", v2, (8,), ("served", "floor", *MLSERVERS)),
            Scenario("j", "tfserving_batch", v1, (8,), ("served", "floor")),
        ]  # fmt: skip
        self.engine: Engine | None = None  # what the service serves on, known once "served" has run
        self.openvino_ir: Path | None = None
        self.shadow_copied = False  # the shadow repository holds this run's copies (shadow_env)

    # -- servers ---------------------------------------------------------------------------------------
    def specs(self) -> dict[str, ServerSpec]:
        python = sys.executable
        uvicorn = [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}"]
        naive_env = {"BENCH_MODEL_DIR": str(self.model_dir)}
        service_env = self.service_env()
        specs = {
            # As deployed (``make serve``, the Docker entrypoint): ``python -m service``.
            "served": ServerSpec("served", [python, "-m", "service"], "/health/ready", env=service_env),
            # The same, predictions pinned to the SavedModel in float32 on TensorFlow (the reference).
            "served-fp32": ServerSpec(
                "served-fp32",
                [python, "-m", "service"],
                "/health/ready",
                env={**service_env, "CNN_RUNTIME": "tensorflow", "CNN_PRECISION": "fp32"},
            ),
            # The same, a copy of the model as version 2 shadowing 10% of the requests to version 1.
            "served-shadow": ServerSpec(
                "served-shadow", [python, "-m", "service"], "/health/ready", env={**service_env, **self.shadow_env()}
            ),
            # Without uvicorn's per-request access log, as the service runs by default.
            "naive": ServerSpec("naive", [*uvicorn, "--no-access-log", "bench.naive_server:app"], "/health", naive_env),
            # For reference: plain ``uvicorn`` defaults, access log on.
            "naive-logged": ServerSpec("naive-logged", [*uvicorn, "bench.naive_server:app"], "/health", naive_env),
            "litserve": litserve_spec(self.model_dir, self.args.model, self.openvino_ir, self.engine),
            **self.mlserver_specs(),
        }
        floor = floor_spec(self.model_dir, self.args.model, self.openvino_ir, self.engine)
        return {**specs, "floor": floor} if floor else specs

    def service_env(self) -> dict[str, str]:
        return {
            "CNN_MODEL_REPOSITORY": str(self.args.repository),
            "CNN_HOST": "127.0.0.1",
            "CNN_PORT": "{port}",
            "CNN_GRPC_PORT": "{grpc_port}",
            **dict(self.args.service_env),
        }

    def shadow_env(self) -> dict[str, str]:
        """A repository holding the model as versions 1 and 2, and a config file whose traffic goes to 1
        while 2 shadows ``SHADOW_FRACTION`` of it (:meth:`measure_shadow` turns the shadow off and on)."""
        root = self.raw / "shadow-repository"
        if not self.shadow_copied:  # copied afresh once per run: a copy from an earlier run may be stale
            shutil.rmtree(root / self.args.model, ignore_errors=True)
            for version in (1, 2):
                target = root / self.args.model / str(version)
                shutil.copytree(self.model_dir, target)
                card = json.loads((target / "model_card.json").read_text())
                (target / "model_card.json").write_text(json.dumps({**card, "version": version}))
            self.shadow_copied = True
        self.write_shadow_config(root / "models.json", shadow=True)
        return {"CNN_MODEL_REPOSITORY": str(root), "CNN_MODEL_CONFIG": str(root / "models.json"),
                "CNN_POLL_INTERVAL_S": "0.5"}  # fmt: skip

    def write_shadow_config(self, path: Path, *, shadow: bool) -> None:
        entry = {"name": self.args.model, "base_path": self.args.model, "model_version_policy": {"all": {}},
                 "traffic": {"1": 1}}  # fmt: skip
        if shadow:
            entry["shadow"] = {"version": 2, "fraction": SHADOW_FRACTION}
        path.write_text(json.dumps({"model_config_list": [entry]}))

    def mlserver_specs(self) -> dict[str, ServerSpec]:
        """MLServer needs the served engine as OpenVINO IR, and its own venv."""
        if self.openvino_ir is None or self.engine is None or not self.args.mlserver.exists():
            return {}
        return {
            mlserver_name(workers): mlserver_spec(self.args.mlserver, ROOT, self.raw, self.args.model,
                                                  self.openvino_ir, self.engine, workers)
            for workers in MLSERVER_WORKERS
        }  # fmt: skip

    @contextmanager
    def serving(self, spec: ServerSpec) -> Iterator[Server]:
        server = start_server(spec, self.raw, ROOT)
        try:
            yield server
        finally:
            server.stop()
            logger.info("%s stopped", spec.name)

    # -- one measurement -------------------------------------------------------------------------------
    def measure(
        self, server: Server, scenario: Scenario, payload: Payload | None, connections: int, name: str | None = None
    ) -> dict[str, Any]:
        """One measurement: wrk with ``payload``'s bodies, or the gRPC load generator for a gRPC scenario;
        recorded under the server's name, or ``name``."""
        url = server.url(scenario.path)
        common = {"connections": connections, "threads": self.args.wrk_threads}
        warmup_errors = 0
        batch = GRPC_PAYLOADS.get(scenario.payload, 0)
        if self.args.warmup and payload is None:
            warmup_errors = self.grpc_load(server, connections, self.args.warmup, batch).error_count
        elif self.args.warmup:
            warmup_errors = run_wrk(url, payload, duration_s=self.args.warmup, **common).error_count
        batches_before = batch_stats(server)
        cpu_before, busy_before = server.tree_cpu_seconds(), machine_busy_s()
        with RssSampler(server) as rss:
            if payload is None:
                result = self.grpc_load(server, connections, self.args.duration, batch)
            else:
                result = run_wrk(url, payload, duration_s=self.args.duration, **common)
        server_cpu = server.tree_cpu_seconds() - cpu_before
        busy = machine_busy_s() - busy_before
        batches_after = batch_stats(server)
        if batches_before and batches_after and batches_after[1] > batches_before[1]:
            images_run, calls = (after - before for after, before in zip(batches_after, batches_before, strict=True))
            result.extra["mean_batch_size"] = images_run / calls
        images = max(result.requests * result.images_per_request, 1)
        result.extra.update(
            server_cpu_s=server_cpu,
            server_cpu_ms_per_image=server_cpu * 1000 / images,
            server_cpu_ms_per_request=server_cpu * 1000 / max(result.requests, 1),
            server_cores=server_cpu / result.duration_s,
            wrk_cores=result.wrk_cpu_s / result.duration_s,
            foreign_cores=max(busy - server_cpu - result.wrk_cpu_s, 0.0) / result.duration_s,
            rss_peak_mib=rss.peak_kib / 1024,
            warmup_errors=warmup_errors,
        )
        record = {
            "server": name or server.spec.name,
            "scenario": scenario.name,
            "payload": scenario.payload,
            **result.to_dict(),
        }
        record["error_count"] = result.error_count + warmup_errors + int(result.requests == 0)
        self.measurements.append(record)
        lat = result.latency_ms
        logger.info(
            "%-8s %s c=%-3d %8.1f img/s  p50 %7.2f  p95 %7.2f  p99 %7.2f ms  errors %d  (wrk %.0f%% of a core)",
            record["server"], scenario.name, connections, result.images_per_s, lat["p50"], lat["p95"], lat["p99"],
            record["error_count"], 100 * result.extra["wrk_cores"],
        )  # fmt: skip
        if record["error_count"]:
            logger.error("%s scenario %s c=%d: errors %s, warm-up errors %d, %d requests completed", server.spec.name,
                         scenario.name, connections, result.errors, warmup_errors, result.requests)  # fmt: skip
        return record

    def grpc_load(self, server: Server, streams: int, duration_s: float, batch: int) -> WrkResult:
        """h2load's ``ModelInfer`` calls of ``batch`` images on the server's gRPC port (the scenario's wrk)."""
        images = np.load(self.raw / "batch_images.npy")[:batch]
        return run_grpc_load(server.grpc_port, images, self.args.model, streams=streams, duration_s=duration_s)

    def check_answers(self, server: Server, payloads: dict[str, Payload], expected: list[int]) -> None:
        """One request per scenario; the predicted class must match the in-process call."""
        for scenario in self.scenarios:
            if server.spec.name not in scenario.servers:
                continue
            if scenario.grpc:
                predicted = grpc_classify(server.grpc_target, self.args.model, self.raw / "images.npy")
                verdict = "ok" if predicted == expected[0] else f"class {predicted}, in-process {expected[0]}"
                self.checks[f"{server.spec.name}/{scenario.name}"] = verdict
                continue
            payload = payloads[scenario.payload]
            body = (payload.directory / "body-0").read_bytes()
            headers = dict(
                line.split(": ", 1) for line in (payload.directory / "body-0.headers").read_text().splitlines()
            )
            status, answer = http_request(server.port, "POST", scenario.path, body, headers)
            verdict = "ok" if status == 200 else f"HTTP {status}: {answer[:200]!r}"
            # Every body-0 starts with the first test image, the one ``expected[0]`` is the class of.
            predicted = _first_class(payload.name, answer) if status == 200 else None
            if predicted is not None and predicted != expected[0]:
                verdict = f"class {predicted}, in-process {expected[0]}"
            self.checks[f"{server.spec.name}/{scenario.name}"] = verdict
            if verdict != "ok":
                logger.error("answer check %s/%s: %s", server.spec.name, scenario.name, verdict)

    # -- the run -----------------------------------------------------------------------------------------
    def limit(
        self, images: Path, batch_sizes: str | None = None, seconds: float | None = None, engine: Engine | None = None
    ) -> dict[str, Any]:
        """The in-process sweep: float32 TensorFlow, or ``engine`` as the service builds it (then the OpenVINO
        IR the peers serve is written too)."""
        logger.info("in-process limit of %s on %s", self.model_dir, engine.label if engine else "tensorflow/fp32")
        batch_sizes, seconds = batch_sizes or self.args.batch_sizes, seconds or self.args.limit_seconds
        argv = [sys.executable, "-m", "bench.inprocess", "--model", str(self.model_dir), "--images", str(images),
                "--batch-sizes", batch_sizes, "--seconds", str(seconds)]  # fmt: skip
        ir = self.raw / "openvino" / "model.xml" if engine is not None and engine.runtime == "openvino" else None
        if engine is not None:
            argv += ["--runtime", engine.runtime, "--precision", engine.precision]
        if ir is not None:
            argv += ["--openvino-ir", str(ir)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"in-process measurement failed: {done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if ir is not None:
            self.openvino_ir = ir
        for row in result["sweep"]:
            logger.info("limit batch %4d: %8.1f img/s  %8.2f ms/call", row["batch_size"], row["images_per_s"],
                        row["call_ms"])  # fmt: skip
        return result

    def accuracy_spec(self, runtime: str, precision: str) -> ServerSpec:
        """The service alone with the benchmarked model, predictions on ``runtime`` in ``precision``."""
        spec = self.specs()["served"]
        env = {**spec.env, "CNN_MODELS": json.dumps([self.args.model]), "CNN_RUNTIME": runtime,
               "CNN_PRECISION": precision}  # fmt: skip
        return ServerSpec(f"accuracy-{runtime}-{precision}", spec.argv, spec.ready_path, env=env)

    def run_server(self, name: str, spec: ServerSpec, payloads: dict[str, Payload], expected: list[int]) -> dict:
        info: dict[str, Any] = {}
        with self.serving(spec) as server:
            info["ready_s"] = server.ready_s
            if name.startswith("served"):
                status, detail = http_request(server.port, "GET", f"/api/v1/models/{self.args.model}")
                info["plan"] = json.loads(detail)["serving"] if status == 200 else None
            self.check_answers(server, payloads, expected)
            for scenario in self.scenarios:
                if name not in scenario.servers:
                    continue
                if name == "served-shadow":
                    self.measure_shadow(server, scenario, payloads[scenario.payload])
                    continue
                for connections in scenario.connections:
                    record = self.measure(server, scenario, payloads.get(scenario.payload), connections)
                    if (name, scenario.name, connections) == ("served", "a", 1):
                        # The machine's speed drifts within minutes: time the served engine's batch-1 call
                        # right after this run too; the c=1 target takes the mean of this and the sweep's.
                        engine = Engine.from_plan(info.get("plan"))
                        after = self.limit(self.raw / "images.npy", batch_sizes="1", seconds=0.2, engine=engine)
                        info["batch1_after_ms"] = after["batch1_call_ms"]["p50"]
                    if scenario.name == "a" and connections == max(scenario.connections):
                        info["load_rss_mib"] = record["extra"]["rss_peak_mib"]
            if name == "served-shadow":
                status, entry = http_request(server.port, "GET", f"/api/v1/models/{self.args.model}")
                info["shadow"] = json.loads(entry)["rollout"] if status == 200 else None
            if name == "served":
                info["peak_rss_mib"] = sum(memory_kib(pid).get("VmHWM", 0) for pid in process_tree(server.pid)) / 1024
                if self.args.profile_seconds:
                    info["profile"] = self.profile(server, payloads["tfserving"], self.scenarios[0])
        return info

    def measure_shadow(self, server: Server, scenario: Scenario, payload: Payload) -> None:
        """Scenario ``a`` on one server with its shadow off, then on (its config file rewritten between
        them), ``SHADOW_ROUNDS`` times: the same process and memory, and the machine's drift spread over
        both. The runs with the shadow off are recorded as ``served-shadow-off``."""
        config = Path(server.spec.env["CNN_MODEL_CONFIG"])
        for _ in range(SHADOW_ROUNDS):
            for shadow in (False, True):
                self.write_shadow_config(config, shadow=shadow)
                wait_for_shadow(server, self.args.model, shadow)
                name = "served-shadow" if shadow else "served-shadow-off"
                for connections in scenario.connections:
                    self.measure(server, scenario, payload, connections, name)

    def measure_observability(self, payload: Payload) -> dict[str, Any]:
        """Scenario ``a`` on the service with tracing on (every trace, OTLP/HTTP) and with payload logging on
        (``all``), each to a local receiver (:mod:`bench.sink`), and with both off (:meth:`alternate`)."""
        scenario = self.scenarios[0]
        sink_spec = ServerSpec("sink", [sys.executable, "-m", "bench.sink", "--port", "{port}"], "/count")
        with self.serving(sink_spec) as sink:
            receiver = f"http://127.0.0.1:{sink.port}"
            variants = {
                "served-observed-off": {},
                "served-traced": {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver, "OTEL_TRACES_SAMPLER": "always_on"},
                "served-logged": {"CNN_LOGGER_URL": f"{receiver}/events", "CNN_LOGGER_MODE": "all"},
            }
            self.alternate(variants, OBSERVED_ROUNDS, payload, (min(scenario.connections), max(scenario.connections)))
            status, body = http_request(sink.port, "GET", "/count")
        return {"sink": json.loads(body) if status == 200 else None}

    def measure_gil(self, payload: Payload) -> None:
        """Scenario ``a`` at its most connections on the service as it runs (its GIL switch interval,
        ``CNN_GIL_SWITCH_INTERVAL_MS``) and with Python's default switch interval (:meth:`alternate`)."""
        variants = {
            "served-gil-default": {},
            "served-gil-5ms": {"CNN_GIL_SWITCH_INTERVAL_MS": PYTHON_SWITCH_INTERVAL_MS},
        }
        self.alternate(variants, GIL_ROUNDS, payload, (max(self.scenarios[0].connections),))

    def alternate(
        self, variants: dict[str, dict[str, str]], rounds: int, payload: Payload, connections: tuple[int, ...]
    ) -> None:
        """Scenario ``a`` on a fresh service per variant (its extra environment), the variants in turn,
        ``rounds`` times, so that the machine's drift is spread over all of them."""
        for _ in range(rounds):
            for name, extra in variants.items():
                spec = ServerSpec(name, [sys.executable, "-m", "service"], "/health/ready",
                                  env={**self.service_env(), **extra})  # fmt: skip
                with self.serving(spec) as server:
                    for count in connections:
                        self.measure(server, self.scenarios[0], payload, count)

    def profile(self, server: Server, payload: Payload, scenario: Scenario) -> dict[str, Any]:
        """Per-request CPU under scenario a at the highest concurrency; py-spy samples a window inside the load."""
        connections, seconds = max(scenario.connections), self.args.profile_seconds
        logger.info("profiling %s: scenario %s, %d connections, %d s", server.spec.name, scenario.name,
                    connections, seconds)  # fmt: skip
        url, threads, results = server.url(scenario.path), self.args.wrk_threads, []

        def load_run() -> None:
            results.append(run_wrk(url, payload, connections=connections, duration_s=seconds + 3, threads=threads))

        load = threading.Thread(target=load_run)
        load.start()
        time.sleep(1.5)  # connections open, steady state
        profile = Profiler(server.pid, seconds, self.raw / "profile.txt").finish()
        load.join()
        if not results:
            raise RuntimeError("the profiling load failed")
        result: WrkResult = results[0]
        return {
            "connections": connections,
            "window_s": profile.window_s,
            "requests_per_s": result.requests_per_s,
            "errors": result.error_count,
            "samples": profile.samples,
            "cpu_s": profile.cpu_s,
            "event_loop_s": profile.event_loop_s,
            "per_request_ms": profile.per_request_ms(result.requests_per_s),
        }

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        model = self.model_dir
        environment = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "cpu_model": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "model_dir": str(self.model_dir.relative_to(ROOT) if self.model_dir.is_relative_to(ROOT) else model),
            "model_summary": model_summary(self.model_dir),
            "wrk": subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True).stdout.splitlines()[0].split(
                " Copyright")[0],
            "warmup_s": self.args.warmup,
            "duration_s": self.args.duration,
            "versions": versions(),
            "mlserver": mlserver_version(self.args.mlserver),
            "uvicorn_loop_http": uvicorn_auto_choice(),
            "service_settings": "defaults" + "".join(f", {k}={v}" for k, v in self.args.service_env),
        }  # fmt: skip
        payloads = build_payloads(self.raw)
        limit = self.limit(self.raw / "images.npy")
        expected = limit["predicted_classes"]
        specs = self.specs()
        servers: dict[str, dict[str, Any]] = {}
        engine_limit: dict[str, Any] | None = None
        for name in self.args.servers:
            if name == "observability":
                servers[name] = self.measure_observability(payloads["tfserving"])
                continue
            if name == "gil":
                self.measure_gil(payloads["tfserving"])
                continue
            if name not in specs:
                needs = f" and {self.args.mlserver} (make bench builds it)" if name in MLSERVERS else ""
                self.notes.append(f"- {name} did not run: it needs the served engine on OpenVINO{needs}")
                continue
            try:
                servers[name] = self.run_server(name, specs[name], payloads, expected)
            except Exception:
                if name == "served":
                    raise
                logger.exception("%s failed; continuing without it", name)
                self.notes.append(f"- {name} failed during the run; see bench/results/raw/{name}.log")
            if name == "served":  # the machine's speed drifts: measure the limit again next to the served runs
                limit = merge_limits(limit, self.limit(self.raw / "images.npy"))
                self.engine = Engine.from_plan(servers.get("served", {}).get("plan"))
                if self.engine is not None:
                    engine_limit = self.limit(self.raw / "images.npy", engine=self.engine)
                    specs = self.specs()  # the peers now know the engine
        served = servers.get("served", {})
        accuracy = []
        if self.args.accuracy:
            accuracy = served_accuracy(self.accuracy_spec, self.args.model, self.raw, ROOT)
        layer_costs(self.measurements, limit, engine_limit)
        results = {
            "environment": environment,
            "limit": limit,
            "engine_limit": engine_limit,
            "engine": self.engine.label if self.engine else None,
            "served": {k: v for k, v in served.items() if k != "profile"},
            "served_fp32": servers.get("served-fp32"),
            "served_shadow": servers.get("served-shadow"),
            "observability": servers.get("observability"),
            "accuracy": accuracy,
            "profile": served.get("profile"),
            "measurements": self.measurements,
            "checks": self.checks,
            "elapsed_s": time.monotonic() - started,
        }
        sweep = (engine_limit or limit)["batch1_call_ms"]["p50"]
        after = served.get("batch1_after_ms")
        results["batch1_call_p50_ms"] = {
            "sweep": sweep,  # the served engine's in-process sweep, after the served runs
            "after": after,  # right after the served c=1 run
            "mean": (sweep + after) / 2 if after else sweep,
        }
        results["targets"] = targets(results)
        results["notes"] = self.notes + foreign_load_notes(self.measurements)
        logger.info("benchmark took %.0f s", results["elapsed_s"])
        return results


_BATCH_METRIC = re.compile(r'^cnn_batch_size_(sum|count)\{model="([^"]+)"\} ([0-9.e+]+)$', re.MULTILINE)


def wait_for_shadow(server: Server, model: str, on: bool, timeout_s: float = 30.0) -> None:
    """Until the server reports the model's shadow on (or off), after a config edit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = http_request(server.port, "GET", f"/api/v1/models/{model}")
        if status == 200 and (json.loads(body)["rollout"]["shadow"] is not None) == on:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.spec.name} did not turn its shadow {'on' if on else 'off'} within {timeout_s:g} s")


# Servers whose /metrics carry the batcher's cnn_batch_size: the service and the floor around its batcher.
_BATCHED = ("served", "floor")


def batch_stats(server: Server) -> tuple[float, float] | None:
    """(images, model calls) so far, summed over models, from the served model's Prometheus metrics."""
    if not server.spec.name.startswith(_BATCHED):
        return None
    status, text = http_request(server.port, "GET", "/metrics")
    if status != 200:
        return None
    totals = {"sum": 0.0, "count": 0.0}
    for kind, _model, value in _BATCH_METRIC.findall(text.decode()):
        totals[kind] += float(value)
    return totals["sum"], totals["count"]


def _first_class(payload: str, answer: bytes) -> int | None:
    """The class a JSON answer gives its first image (``None`` for binary answers)."""
    if payload.startswith("v2_json"):
        scores = json.loads(answer)["outputs"][0]["data"][:10]
    elif payload.startswith("tfserving"):
        scores = json.loads(answer)["predictions"][0]
    elif payload.startswith("png"):
        return json.loads(answer)["predictions"][0]["class_id"]
    else:
        return None
    return max(range(len(scores)), key=scores.__getitem__)


def model_cpu_ms_per_image(sweep: list[dict[str, Any]], batch: float) -> float:
    """The engine's CPU per image at a mean batch size, interpolated between the sweep's batch sizes."""
    points = sorted((row["batch_size"], row["cpu_ms_per_image"]) for row in sweep)
    if batch <= points[0][0]:
        return points[0][1]
    for (low, low_cpu), (high, high_cpu) in pairwise(points):
        if batch <= high:
            return low_cpu + (high_cpu - low_cpu) * (batch - low) / (high - low)
    return points[-1][1]


def layer_costs(measurements: list[dict[str, Any]], limit: dict[str, Any], engine: dict[str, Any] | None) -> None:
    """For each measurement of the service with a known mean batch size: its CPU per request beyond the
    model (``layer_cpu_ms_per_request``), the model's share taken from the in-process CPU per image of the
    engine it ran on (float32 TensorFlow for served-fp32) at that batch size."""
    for m in measurements:
        extra = m["extra"]
        sweep = (limit if m["server"] == "served-fp32" else engine or {}).get("sweep")
        if not m["server"].startswith(_BATCHED) or "mean_batch_size" not in extra or not sweep:
            continue
        model = model_cpu_ms_per_image(sweep, extra["mean_batch_size"]) * m["images_per_request"]
        extra["model_cpu_ms_per_request"] = model
        extra["layer_cpu_ms_per_request"] = extra["server_cpu_ms_per_request"] - model


def merge_limits(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The faster of two limit sweeps per batch size (both kept under ``runs``); batch-1 call time of the first."""
    sweep = [
        max(a, b, key=lambda row: row["images_per_s"]) for a, b in zip(first["sweep"], second["sweep"], strict=True)
    ]
    runs = [*first.get("runs", [first["sweep"]]), second["sweep"]]
    return {**first, "sweep": sweep, "best": max(sweep, key=lambda row: row["images_per_s"]), "runs": runs}


# -- targets ---------------------------------------------------------------------------------------------
def _ratio(a: dict | None, b: dict | None) -> float | None:
    if a is None or b is None or not b["images_per_s"]:
        return None
    return a["images_per_s"] / b["images_per_s"]


def _at_least(value: float | None, goal: float) -> bool:
    return value is not None and value >= goal


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    ms = results["measurements"]
    top = max((m["connections"] for m in ms if m["scenario"] == "a"), default=64)
    served_top = report.find_measurement(ms, "served", "a", top)
    batch = next((m for m in ms if m["server"] == "served" and m["scenario"] == "c"), None)
    limit = results["limit"]
    served = results["served"]

    def target(name: str, measured: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
        return {"name": name, "measured": measured, "goal": goal, "met": ok if measured is not None else None}

    vs_naive = _ratio(served_top, report.find_measurement(ms, "naive", "a", top))
    vs_lit = _ratio(served_top, report.find_measurement(ms, "litserve", "a", top))
    vs_limit = batch["images_per_s"] / limit["best"]["images_per_s"] if batch else None
    grpc = next((m for m in ms if m["server"] == "served" and m["scenario"] == "d"), None)
    grpc_vs_rest = _ratio(grpc, batch)
    grpc_vs_limit = grpc["images_per_s"] / limit["best"]["images_per_s"] if grpc else None
    ready = served.get("ready_s")
    rss = served.get("peak_rss_mib")
    precision_targets = _precision_targets(results, target, top)
    return [
        target(f"a, c={top}: served / naive img/s", vs_naive, "≥ 5", vs_naive is not None and vs_naive >= 5),
        target(f"a, c={top}: served / LitServe (same engine) img/s", vs_lit, "reported", None),
        target("c: served / in-process float32 limit img/s", vs_limit, "≥ 0.85", _at_least(vs_limit, 0.85)),
        target("d (gRPC) / c (REST v2 binary) img/s", grpc_vs_rest, "≥ 1", _at_least(grpc_vs_rest, 1)),
        target("d (gRPC) / in-process float32 limit img/s", grpc_vs_limit, "≥ 0.85", _at_least(grpc_vs_limit, 0.85)),
        *_same_engine_targets(results, target, top),
        *_floor_targets(results, target, top),
        *_shadow_targets(results, target, top),
        *_observability_targets(results, target, top),
        *_gil_targets(results, target, top),
        target("start to ready s", ready, "≤ 10", ready is not None and ready <= 10),
        target("peak RSS MiB", rss, f"≤ {1.5 * GB / MIB:,.0f} (1.5 GB)", rss is not None and rss * MIB <= 1.5 * GB),
        *precision_targets,
    ]


# Each protocol with one image per request, against the same-engine peer's matching protocol.
_PEER_SCENARIOS = (("a", "TF Serving JSON", "e"), ("e", "v2 JSON", "e"), ("f", "v2 binary", "e"),
                   ("g", "native raw PNG", "e"), ("h", "gRPC ModelInfer", "h"))  # fmt: skip
# 64 images per request against the served engine's in-process limit, and the share each must reach.
_LIMIT_SCENARIOS = (("c", "v2 binary", 0.95), ("d", "gRPC raw", 0.95), ("i", "v2 JSON", 0.9),
                    ("j", "TF Serving JSON", 0.9))  # fmt: skip


def _best_mlserver(ms: list[dict[str, Any]], scenario: str, top: int) -> dict[str, Any] | None:
    peers = [report.find_measurement(ms, name, scenario, top) for name in MLSERVERS]
    return max((p for p in peers if p), key=lambda p: p["images_per_s"], default=None)


def _floor_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """The bare floor (same batcher and engine, nothing else; ASGI, and grpc.aio) against MLServer, and the
    service against it: how much of the gap to the MLServer goal a Python serving layer can close here at all."""
    ms, rows = results["measurements"], []
    for scenario, protocol, peer in _PEER_SCENARIOS:  # the floor runs some of them (floor_spec)
        floor = report.find_measurement(ms, "floor", scenario, top)
        if floor is None:
            continue
        kind = "gRPC" if peer == "h" else "ASGI"
        vs_peer = _ratio(floor, _best_mlserver(ms, peer, top))
        rows.append(target(f"{scenario}, c={top}, 1 image: bare {kind} floor {protocol} / {_mlserver_label(peer)}",
                           vs_peer, "reported", None))  # fmt: skip
        served = _ratio(report.find_measurement(ms, "served", scenario, top), floor)
        rows.append(target(f"{scenario}, c={top}, 1 image: served {protocol} / bare {kind} floor", served, "reported",
                           None))  # fmt: skip
    at_64 = _engine_at_64(results)
    for scenario, floor_kind in _FLOOR_BATCH_SCENARIOS:
        floor = report.find_measurement(ms, "floor", scenario, 8)
        if floor is not None and at_64 is not None:
            ratio = floor["images_per_s"] / at_64["images_per_s"]
            rows.append(target(f"{scenario}, 64 images: bare {floor_kind} floor / engine in-process, batch 64", ratio,
                               "reported", None))  # fmt: skip
    return rows


# The 64-image scenarios the floor runs (the best a Python layer could do there), and the protocol of each.
_FLOOR_BATCH_SCENARIOS = (("d", "gRPC"), ("i", "v2 JSON"), ("j", "TF Serving JSON"))


def _engine_at_64(results: dict[str, Any]) -> dict[str, Any] | None:
    """The served engine's in-process row at batch 64: a 64-image request is one model call of 64 images
    (the batch size limit)."""
    engine = results.get("engine_limit")
    return next((row for row in engine["sweep"] if row["batch_size"] == 64), engine["best"]) if engine else None


def _mlserver_label(peer_scenario: str) -> str:
    """The MLServer protocol a one-image scenario is compared with: its gRPC for gRPC, else its v2 JSON."""
    return "MLServer gRPC" if peer_scenario == "h" else "MLServer v2 JSON"


def _same_engine_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """The serving layer against MLServer on the same engine (the better of its worker counts), the
    64-image scenarios against the engine in-process, and one connection's p50 against the engine's call."""
    ms, rows = results["measurements"], []
    goal = 2.0 if cpu_class() in ("amx", "bf16") else 1.6
    goal_text = f"≥ {goal:g} ({'a CPU with BF16' if goal == 2 else 'no BF16'})"
    for scenario, protocol, peer_scenario in _PEER_SCENARIOS:
        ratio = _ratio(report.find_measurement(ms, "served", scenario, top), _best_mlserver(ms, peer_scenario, top))
        name = f"{scenario}, c={top}, 1 image: served {protocol} / {_mlserver_label(peer_scenario)}"
        rows.append(target(name, ratio, goal_text, _at_least(ratio, goal)))
    at_64 = _engine_at_64(results)
    for scenario, protocol, share in _LIMIT_SCENARIOS:
        found = next((m for m in ms if m["server"] == "served" and m["scenario"] == scenario), None)
        ratio = found["images_per_s"] / at_64["images_per_s"] if found and at_64 else None
        rows.append(target(f"{scenario}, 64 images: served {protocol} / engine in-process, batch 64", ratio,
                           f"≥ {share:g}", _at_least(ratio, share)))  # fmt: skip
    c1 = report.find_measurement(ms, "served", "a", 1)
    call = results["batch1_call_p50_ms"]["mean"] if results.get("engine_limit") else None
    p50 = c1["latency_ms"]["p50"] if c1 else None
    ok = p50 is not None and call is not None and p50 <= call + 0.4
    goal_c1 = f"≤ {call + 0.4:.2f} (engine batch-1 call {call:.2f} + 0.4)" if call else "engine batch-1 call + 0.4"
    rows.append(target("a, c=1: served p50 ms", p50, goal_c1, ok))
    return rows


def _shadow_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """The live side of ``served-shadow`` with its shadow on against the same process with it off, each
    the mean of its rounds."""
    ms = results["measurements"]
    names = ("served-shadow", "served-shadow-off")
    rates = [_mean_of_runs(ms, name, top) for name in names]
    p50s = [_mean_of_runs(ms, name, 1, lambda m: m["latency_ms"]["p50"]) for name in names]
    ratio = rates[0] / rates[1] if None not in rates else None
    p50 = p50s[0] / p50s[1] if None not in p50s else None
    share = f"{SHADOW_FRACTION:.0%}"
    return [
        target(f"a, c={top}: live img/s with a {share} shadow / without", ratio, "≥ 0.85", _at_least(ratio, 0.85)),
        target(f"a, c=1: live p50 with a {share} shadow / without", p50, "≤ 1.1 (within noise)",
               p50 is not None and p50 <= 1.1),
    ]  # fmt: skip


def _mean_of_runs(
    ms: list[dict[str, Any]], server: str, connections: int, field: Any = lambda m: m["images_per_s"]
) -> float | None:
    """The mean ``field`` (img/s) of a server's scenario ``a`` runs at ``connections``."""
    found = [field(m) for m in ms if (m["server"], m["scenario"], m["connections"]) == (server, "a", connections)]
    return sum(found) / len(found) if found else None


def _cpu_ms_per_request(measurement: dict[str, Any]) -> float:
    return measurement["extra"]["server_cpu_ms_per_request"]


def _observability_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """Tracing (every trace) and payload logging (``all``) against the same service with both off."""
    ms = results["measurements"]
    off = _mean_of_runs(ms, "served-observed-off", top)
    off_cpu = _mean_of_runs(ms, "served-observed-off", top, _cpu_ms_per_request)
    rows = []
    for name, what in (("served-traced", "tracing on, every trace"), ("served-logged", "payload logging, all")):
        on = _mean_of_runs(ms, name, top)
        ratio = on / off if on is not None and off else None
        rows.append(target(f"a, c={top}: {what} / both off img/s", ratio, "≥ 0.85", _at_least(ratio, 0.85)))
        on_cpu = _mean_of_runs(ms, name, top, _cpu_ms_per_request)
        cost = on_cpu - off_cpu if on_cpu is not None and off_cpu is not None else None
        rows.append(target(f"a, c={top}: {what}, server CPU ms per request beyond both off", cost, "reported", None))
    served = report.find_measurement(ms, "served", "a", top)
    ratio = off / served["images_per_s"] if off and served else None
    rows.append(target(f"a, c={top}: both off / served (the first run) img/s", ratio, "reported (within noise)", None))
    return rows


def _gil_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """The service's GIL switch interval against Python's default: throughput, and the cores it keeps busy."""
    ms = results["measurements"]
    served, python = (_mean_of_runs(ms, name, top) for name in ("served-gil-default", "served-gil-5ms"))
    ratio = served / python if served is not None and python else None
    rows = [target(f"a, c={top}: GIL switch interval as served / Python's 5 ms img/s", ratio, "reported", None)]
    for name, what in (("served-gil-default", "as served"), ("served-gil-5ms", "Python's 5 ms")):
        cores = _mean_of_runs(ms, name, top, lambda m: m["extra"]["server_cores"])
        rows.append(target(f"a, c={top}: server cores busy, GIL switch interval {what}", cores, "reported", None))
    return rows


def cpu_class() -> str:
    """What reduced precision can gain here: ``amx``, ``bf16`` (AVX-512 BF16, no AMX) or ``none``."""
    flags = cpu_flags()
    return "amx" if "amx_bf16" in flags else "bf16" if "avx512_bf16" in flags else "none"


def _precision_targets(results: dict[str, Any], target: Any, top: int) -> list[dict[str, Any]]:
    """auto against float32: the goals hold on a CPU with AMX; with BF16 but no AMX the ratios are reported;
    without either, auto must not be slower than float32 (within 5%)."""
    ms, kind = results["measurements"], cpu_class()
    auto_a, fp32_a = (report.find_measurement(ms, name, "a", top) for name in ("served", "served-fp32"))
    auto_1, fp32_1 = (report.find_measurement(ms, name, "a", 1) for name in ("served", "served-fp32"))
    auto_c = next((m for m in ms if m["server"] == "served" and m["scenario"] == "c"), None)
    limit = results["limit"]["best"]["images_per_s"]

    def goal(amx: float, relation: str) -> tuple[str, Any]:
        if kind == "amx":
            return f"{relation} {amx:g} (AMX)", (lambda v: v >= amx) if relation == "≥" else (lambda v: v <= amx)
        if kind == "bf16":
            return "reported (BF16 without AMX)", None
        return ("≥ 0.95 (no BF16: not slower)", lambda v: v >= 0.95) if relation == "≥" else (
            "≤ 1.05 (no BF16: not slower)", lambda v: v <= 1.05)  # fmt: skip

    rows = []
    c_ratio = auto_c["images_per_s"] / limit if auto_c else None
    a_ratio = _ratio(auto_a, fp32_a)
    p50_ratio = auto_1["latency_ms"]["p50"] / fp32_1["latency_ms"]["p50"] if auto_1 and fp32_1 else None
    for name, value, (text, check) in (
        ("c: auto / in-process float32 limit img/s", c_ratio, goal(3, "≥")),
        (f"a, c={top}: auto / fp32 img/s", a_ratio, goal(1.5, "≥")),
        ("a, c=1: auto p50 / fp32 p50", p50_ratio, goal(0.5, "≤")),
    ):
        rows.append(target(name, value, text, None if check is None or value is None else check(value)))
    served = [row["accuracy"] for row in results.get("accuracy", []) if "accuracy" in row]
    if served:
        worst = min(served)
        rows.append(target("served accuracy through HTTP, worst setting %", 100 * worst, "≥ 92.9", worst >= 0.929))
    return rows


def foreign_load_notes(measurements: list[dict[str, Any]], threshold: float = 0.15) -> list[str]:
    noisy = [m for m in measurements if m["extra"].get("foreign_cores", 0) > threshold]
    if not noisy:
        return []
    worst = max(noisy, key=lambda m: m["extra"]["foreign_cores"])
    return [
        "",
        f"Note: other processes used over {threshold:.2f} cores during {len(noisy)} measurement(s) "
        f"(worst: {worst['server']} {worst['scenario']} c={worst['connections']}, "
        f"{worst['extra']['foreign_cores']:.2f} cores); those numbers are pessimistic.",
    ]


# -- command line ------------------------------------------------------------------------------------------
def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("CNN_"):
        raise argparse.ArgumentTypeError(f"expected CNN_NAME=value, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--model", default="fashion_cnn")
    parser.add_argument("--version", type=int, help="model version (default: the highest)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--duration", type=int, default=12, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64], help="scenario a connections")
    servers = [
        "served-fp32",
        "served",
        "served-shadow",
        "observability",
        "gil",
        "naive",
        "naive-logged",
        "litserve",
        "floor",
        *MLSERVERS,
    ]
    parser.add_argument("--servers", nargs="+", default=servers, choices=servers,
                        help="in this order; the peers on the served engine need 'served' before them")  # fmt: skip
    parser.add_argument("--mlserver", type=Path, default=ROOT / ".venv-mlserver" / "bin" / "mlserver",
                        help="MLServer's executable, in its own venv (make bench builds it)")  # fmt: skip
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false",
                        help="skip the served accuracy per runtime and precision")  # fmt: skip
    parser.add_argument("--batch-sizes", default="1,8,32,64,128,256", help="in-process limit sweep")
    parser.add_argument("--limit-seconds", type=float, default=2.0, help="timed seconds per batch size")
    parser.add_argument("--profile-seconds", type=int, default=10, help="profiled load window (0: no profile)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--service-env", type=_key_value, action="append", default=[], metavar="CNN_NAME=VALUE",
                        help="extra setting for the served model (repeatable)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s measurements, 1 s warm-ups")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.limit_seconds, args.profile_seconds = 2, 1, 0.3, 3
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    results = Bench(args).run()
    report.write_all(results, args.output)
    print(report.console_summary(results))
    print(f"\nwrote {args.output / 'RESULTS.md'}, results.json, throughput.png")


if __name__ == "__main__":
    main()
