"""The ``cnn-serving`` command line: help, a bad value for every setting (one line, exit 2), TF Serving's
flags and image environment, a TF Serving Kubernetes manifest's arguments, ``predict``/``summary``/
``models`` against a live server, and the README's quickstart block run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import yaml

from service.cli import main as cli
from service.cli import serve
from service.cli.errors import env_name
from service.core.settings import Settings
from tests.reliability.servers import HOST, free_port, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "service/transports/static/explorer/samples/test-00000-ankle-boot.png"
CNN_SERVING = Path(sys.executable).parent / "cnn-serving"

# A bad value for every setting, and what the one line must say of it.
BAD_VALUES = {
    "model_repository": ("/nonexistent/models", "does not exist"),
    "models": ("fashion_cnn lenet5", "comma-separated"),
    "version_policy": ("newest", "expected a string to match"),
    "model_config_file": ("/nonexistent/models.json", "cannot be read"),
    "poll_interval_s": ("-1", "greater than or equal to 0"),
    "allow_model_control": ("maybe", "boolean"),
    "max_batch_size": ("abc", "integer"),
    "max_concurrent_batches": ("17", "less than or equal to 16"),
    "max_batch_wait_ms": ("-1", "greater than or equal to 0"),
    "max_queue_images": ("0", "greater than or equal to 1"),
    "queue_timeout_s": ("0", "greater than 0"),
    "request_timeout_s": ("soon", "number"),
    "max_request_bytes": ("100", "greater than or equal to 1024"),
    "max_image_pixels": ("0", "greater than or equal to 1"),
    "max_request_pixels": ("lots", "integer"),
    "max_images_per_request": ("1.5", "integer"),
    "max_feature_map_images": ("0", "greater than or equal to 1"),
    "max_concurrent_feature_maps": ("0", "greater than or equal to 1"),
    "shadow_queue_images": ("-1", "greater than or equal to 1"),
    "default_top_k": ("0", "greater than or equal to 1"),
    "runtime": ("gpu", "'auto', 'tensorflow' or 'openvino'"),
    "precision": ("fp8", "'fp32', 'bf16', 'fp16' or 'int8'"),
    "max_accuracy_drop": ("-0.5", "greater than or equal to 0"),
    "batch_buckets": ("[0, 4]", "greater than or equal to 1"),
    "inference_threads": ("-2", "greater than or equal to 0"),
    "gil_switch_interval_ms": ("0", "greater than 0"),
    "compute_nice": ("20", "less than or equal to 19"),
    "allowed_hosts": ("a b", "comma-separated"),
    "api_key": ("two words", "expected a string to match"),
    "shutdown_timeout_s": ("0", "greater than 0"),
    "host": ("not a host!", "expected a string to match"),
    "port": ("70000", "less than or equal to 65535"),
    "grpc_port": ("-1", "greater than or equal to 0"),
    "header_timeout_s": ("0", "greater than 0"),
    "keep_alive_timeout_s": ("forever", "number"),
    "log_level": ("loud", "'debug'"),
    "log_format": ("yaml", "'human' or 'json'"),
    "access_log": ("sometimes", "boolean"),
    "logger_url": ("ftp://sink", "URL scheme should be 'http' or 'https'"),
    "logger_mode": ("everything", "'all', 'request' or 'response'"),
    "logger_sample": ("1.5", "less than or equal to 1"),
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("CNN_") or n in ("MODEL_NAME", "MODEL_BASE_PATH")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(serve, "run", lambda *_: pytest.fail("a bad configuration started the server"))
    return monkeypatch


def _settings(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    args, extra = cli.parser().parse_known_args(["serve", *argv])
    assert not extra
    return serve.settings_from(args, dict(os.environ) if env is None else env)[0]


# -- help, version, configuration errors ---------------------------------------------------------------
def test_help_lists_the_commands_and_every_setting(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(command in text for command in ("serve", "predict", "summary", "models")), text
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    missing = [env_name(field) for field in Settings.model_fields if env_name(field) not in text]
    assert not missing, f"serve --help does not show {missing}"
    assert "--rest_api_port" in text and "--model_base_path" in text
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert re.fullmatch(r"cnn-serving \S+\n", capsys.readouterr().out)


def test_every_setting_has_a_bad_value_here():
    assert set(BAD_VALUES) == set(Settings.model_fields)


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_a_bad_setting_is_one_line_and_exit_2(field: str, clean_env, capsys):
    value, expected = BAD_VALUES[field]
    clean_env.setenv(env_name(field), value)
    assert cli.main(["serve"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"cnn-serving: {env_name(field)}: ") and expected in lines[0], lines[0]
    if field not in ("model_repository", "model_config_file"):  # those name the path, not the raw value
        assert repr(value) in lines[0]


VALUED_FLAGS = [f for f in sorted(BAD_VALUES) if Settings.model_fields[f].annotation not in (bool, bool | None)]


@pytest.mark.parametrize("field", VALUED_FLAGS)  # a switch (--flag / --no-flag) takes no value
def test_a_bad_flag_is_named_as_the_flag(field: str, clean_env, capsys):
    value, expected = BAD_VALUES[field]
    assert cli.main(["serve", serve.flag(field), value]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"cnn-serving: {serve.flag(field)}: ") and expected in line, line


def test_the_console_script_prints_no_traceback():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_")} | {"CNN_MAX_BATCH_SIZE": "abc"}
    done = subprocess.run([str(CNN_SERVING), "serve"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr
        == "cnn-serving: CNN_MAX_BATCH_SIZE: expected a valid integer, unable to parse string as an integer, got 'abc'\n"
    )


def test_models_take_a_json_list_or_comma_separated_names(clean_env):
    clean_env.setenv("CNN_MODELS", "fashion_cnn, lenet5:1")
    assert Settings().models == ["fashion_cnn", "lenet5:1"]
    clean_env.setenv("CNN_MODELS", '["lenet5"]')
    assert Settings().models == ["lenet5"]


def test_flags_win_over_the_environment(clean_env):
    clean_env.setenv("CNN_MAX_BATCH_SIZE", "8")
    assert _settings([]).max_batch_size == 8
    assert _settings(["--max-batch-size", "16"]).max_batch_size == 16
    assert _settings(["--no-access-log"], {"CNN_ACCESS_LOG": "true"}).access_log is False


# -- TensorFlow Serving's flags, image environment and manifests ---------------------------------------------
def test_tf_serving_flags_keep_their_meaning(bundled_repository: Path, clean_env):
    settings = _settings([
        "--port=9500", "--rest_api_port=9501", "--model_name=lenet5", f"--model_base_path={bundled_repository}/lenet5",
        "--file_system_poll_wait_seconds=5", "--rest_api_timeout_in_ms=2500", "--enable_batching",
        "--tensorflow_intra_op_parallelism=2",
    ])  # fmt: skip
    assert (settings.grpc_port, settings.port, settings.models) == (9500, 9501, ["lenet5"])
    assert settings.model_repository == bundled_repository and settings.poll_interval_s == 5
    assert settings.request_timeout_s == 2.5 and settings.inference_threads == 2


def test_a_base_path_not_named_after_the_model_becomes_a_model_config(bundled_repository: Path, tmp_path, clean_env):
    (tmp_path / "any-name").symlink_to(bundled_repository / "lenet5")
    settings = _settings(["--model_name=digits", f"--model_base_path={tmp_path / 'any-name'}"])
    config = json.loads(settings.model_config_file.read_text())
    assert config == {"model_config_list": [{"name": "digits", "base_path": str(tmp_path / "any-name")}]}


def test_unknown_tf_serving_flags_are_named(clean_env, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["serve", "--batching_parameters_file=/b.txt", "--monitoring_config_file", "m"])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert (
        "--batching_parameters_file" in error and "--monitoring_config_file" in error and "TensorFlow Serving" in error
    )


def test_tf_serving_image_environment(bundled_repository: Path, clean_env):
    """Run like TF Serving's image: MODEL_NAME, MODEL_BASE_PATH; REST on 8501, gRPC on 8500."""
    env = {"MODEL_NAME": "fashion_cnn", "MODEL_BASE_PATH": str(bundled_repository), "CNN_PORT": "8000"}
    settings = _settings([], env)
    assert (settings.port, settings.grpc_port, settings.models) == (8501, 8500, ["fashion_cnn"])
    assert settings.model_repository == bundled_repository


def test_tf_serving_text_config(bundled_repository: Path, tmp_path: Path, clean_env):
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "lenet5" base_path: "{bundled_repository}/lenet5" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 1 }} }} version_labels {{ key: "stable" value: 1 }} }}
}}""")
    settings = _settings([f"--model_config_file={config}"])
    assert settings.model_config_file == config
    broken = tmp_path / "broken.config"
    broken.write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(serve.ConfigurationError, match=r"--model_config_file: .*neither JSON nor a TF Serving"):
        _settings([f"--model_config_file={broken}"])


TF_SERVING_MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fashion}
spec:
  selector: {matchLabels: {app: fashion}}
  template:
    metadata: {labels: {app: fashion}}
    spec:
      containers:
        - name: serving
          image: tensorflow/serving:2.21.0
          args: ["--port=8500", "--rest_api_port=8501", "--model_name=fashion_cnn",
                 "--model_base_path=/models/fashion_cnn", "--enable_batching=true"]
          ports: [{containerPort: 8500, name: grpc}, {containerPort: 8501, name: http}]
          readinessProbe: {httpGet: {path: /v1/models/fashion_cnn, port: 8501}}
          volumeMounts: [{name: models, mountPath: /models}]
      volumes: [{name: models, persistentVolumeClaim: {claimName: models}}]
"""


def test_a_tf_serving_deployment_works_by_changing_only_the_image(bundled_repository: Path, tmp_path, clean_env):
    (container,) = yaml.safe_load(TF_SERVING_MANIFEST)["spec"]["template"]["spec"]["containers"]
    mount = container["volumeMounts"][0]["mountPath"]
    volume = tmp_path / "volume"  # what the claim holds, mounted at /models in the pod
    volume.mkdir()
    (volume / "fashion_cnn").symlink_to(bundled_repository / "fashion_cnn")
    args = [arg.replace(f"={mount}/", f"={volume}/") for arg in container["args"]]
    settings = _settings(args)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (settings.grpc_port, settings.port) == (ports["grpc"], ports["http"])
    assert settings.models == ["fashion_cnn"] and settings.model_repository == volume
    assert container["readinessProbe"]["httpGet"]["port"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/fashion_cnn"  # TF Serving's status route


# -- a live server started with TF Serving's flags -------------------------------------------------------
@pytest.fixture(scope="module")
def live(bundled_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    rest, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_")}
    env |= {"CNN_RUNTIME": "tensorflow", "CNN_PRECISION": "fp32", "CNN_HOST": HOST}
    log = (tmp_path_factory.mktemp("cli") / "server.log").open("wb")
    argv = [str(CNN_SERVING), "serve", f"--port={grpc_port}", f"--rest_api_port={rest}", "--model_name=fashion_cnn",
            f"--model_base_path={bundled_repository}/fashion_cnn", "--file_system_poll_wait_seconds=0"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://{HOST}:{rest}"
    try:
        wait_until_ready(url, lambda: process.poll() is None)
        yield url, f"{HOST}:{grpc_port}"
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
        output = Path(log.name).read_text()
        assert "Traceback" not in output


def test_tf_serving_rest_and_grpc_answer_on_the_given_ports(live):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    url, target = live
    pixels = np.zeros((1, 28, 28, 1), np.float32)
    rest = httpx.post(f"{url}/v1/models/fashion_cnn:predict", json={"instances": pixels.tolist()}, timeout=60)
    assert rest.status_code == 200
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "fashion_cnn"
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=pixels.tobytes())
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in pixels.shape)
    request.inputs["images"].CopyFrom(proto)
    with grpc.insecure_channel(target) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    probabilities = np.frombuffer(answer.outputs["probabilities"].tensor_content, np.float32)
    np.testing.assert_allclose(probabilities, rest.json()["predictions"][0], atol=1e-5)


def test_predict_summary_and_models_against_a_live_server(live, capsys):
    url, _ = live
    expected = httpx.post(
        f"{url}/api/v1/models/fashion_cnn/predict", files={"files": SAMPLE.read_bytes()}, timeout=60
    ).json()["predictions"][0]
    assert cli.main(["predict", str(SAMPLE), "--url", url]) == 0
    table = capsys.readouterr().out
    assert expected["label"] in table and f"{expected['probability']:.1%}" in table and SAMPLE.name in table
    assert cli.main(["predict", str(SAMPLE), "--url", url, "--json", "--top-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["predictions"][0]["class_id"] == expected["class_id"] and len(answer["predictions"][0]["top_k"]) == 2

    assert cli.main(["summary", "fashion_cnn", "--url", url]) == 0
    table = capsys.readouterr().out
    layers = httpx.get(f"{url}/api/v1/models/fashion_cnn/summary", timeout=30).json()["layers"]
    assert all(layer["name"] in table for layer in layers) and "multiply-adds" in table
    assert cli.main(["summary", "fashion_cnn", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"] == layers

    assert cli.main(["models", "--url", url]) == 0
    assert re.search(r"fashion_cnn\s+1\s+AVAILABLE\s+yes", capsys.readouterr().out)
    assert cli.main(["summary", "no_such_model", "--url", url]) == 1
    assert "404" in capsys.readouterr().err
    assert cli.main(["models", "--url", f"http://{HOST}:{free_port()}"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def _quickstart_block() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Quickstart") : readme.index("## The explorer page")]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for line in blocks[1].splitlines() if line.strip()]


def test_the_readme_quickstart_runs_as_written(live, tmp_path: Path):
    url, _ = live
    script = "\n".join(line.replace("http://127.0.0.1:8000", url) for line in _quickstart_block())
    assert "cnn-serving predict" in script and "curl" in script
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNN_")} | {"CNN_URL": url}
    for output in ("conv1.png", "why.png"):
        (REPO_ROOT / output).unlink(missing_ok=True)
    try:
        done = subprocess.run(["bash", "-e", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "ankle boot" in done.stdout.lower() and "conv1" in done.stdout
        for output in ("conv1.png", "why.png"):
            assert (REPO_ROOT / output).read_bytes().startswith(b"\x89PNG")
    finally:
        for output in ("conv1.png", "why.png"):
            (REPO_ROOT / output).unlink(missing_ok=True)
