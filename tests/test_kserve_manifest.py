"""Render deploy/kserve with kustomize and check it, fully offline.

The InferenceService is validated against KServe's own CRD schema (vendored under tests/schemas/kserve,
see the README there), made strict at load time: wherever the schema lists `properties` and does not
say `x-kubernetes-preserve-unknown-fields: true`, unknown fields are errors, as `kubectl apply`
(server-side field validation, Strict) reports them. Its metadata, which the CRD schema leaves open,
and the other objects are validated with `kubernetes-validate`, as in tests/test_k8s_manifests.py.
Then the properties the service relies on are asserted.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_k8s_manifests import (
    K8S_VERSIONS,
    binds_all_interfaces,
    check_probes,
    container_port,
    get_paths,
    kustomize_command,
    mounted_config,
    named,
    one,
    pod_env,
    service_settings,
)
from tests.test_k8s_manifests import container as k8s_container
from tests.test_k8s_manifests import render as render_k8s

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - a missing dev dependency must fail, not skip
    raise ImportError(
        "tests/test_kserve_manifest.py needs `jsonschema` and `kubernetes-validate` (dev extra): pip install -e '.[dev]'"
    ) from exc

ROOT = Path(__file__).resolve().parent.parent
KSERVE_DIR = ROOT / "deploy" / "kserve"
SCHEMA_FILE = ROOT / "tests" / "schemas" / "kserve" / "inferenceservice-v1beta1.json"


# --------------------------------------------------------------------------------------------- schema


def strict(schema: Any) -> Any:
    """A copy of a structural (CRD) schema in which unknown fields are errors.

    jsonschema ignores the x-kubernetes-* keywords and lets any object carry extra fields; the API
    server instead rejects (or prunes) fields the schema does not list, except below
    `x-kubernetes-preserve-unknown-fields: true`. Objects that are maps (`additionalProperties`) or
    left open (`type: object` without `properties`, like metadata) are kept as they are.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf") and isinstance(
            value, dict | list
        ):
            out[key] = strict(value)
        else:
            out[key] = value
    if (
        isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


_validators: dict[bool, jsonschema.protocols.Validator] = {}


def validator(strict_fields: bool = True) -> jsonschema.protocols.Validator:
    if strict_fields not in _validators:
        assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; see tests/schemas/kserve/README.md"
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
        _validators[strict_fields] = jsonschema.Draft7Validator(strict(schema) if strict_fields else schema)
    return _validators[strict_fields]


def schema_errors(doc: dict[str, Any], strict_fields: bool = True) -> list[str]:
    errors = sorted(validator(strict_fields).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# --------------------------------------------------------------------------------------------- manifests

_rendered: list[dict[str, Any]] = []


def render() -> list[dict[str, Any]]:
    if not _rendered:
        result = subprocess.run(
            [*kustomize_command(), str(KSERVE_DIR)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"kustomize failed for deploy/kserve:\n{result.stderr}"
        docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert docs, "deploy/kserve rendered no objects"
        _rendered.extend(docs)
    return _rendered


def isvc() -> dict[str, Any]:
    return copy.deepcopy(one(render(), "InferenceService"))


def predictor(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return (doc or isvc())["spec"]["predictor"]


def container(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = predictor(doc)["containers"]
    assert len(containers) == 1, "a custom predictor has exactly one container (no transformer collocated)"
    return containers[0]


def env(doc: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    entries = container(doc)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env entries: {names}"
    return {e["name"]: e for e in entries}


def settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's settings in the predictor container, parsed by the service's Settings class."""
    return service_settings(pod_env(container(), render()), monkeypatch)


# --------------------------------------------------------------------------------------------- tests


def test_expected_objects():
    docs = render()
    kinds = ["ConfigMap", "InferenceService", "PersistentVolumeClaim", "PodDisruptionBudget"]
    assert sorted(d["kind"] for d in docs) == kinds
    assert {d["metadata"].get("namespace") for d in docs} == {"cnn-serving"}
    doc = one(docs, "InferenceService")
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["metadata"]["name"] == "cnn-serving"


def test_plain_files_match_the_rendering():
    """`kubectl apply -f` of the files gives the same objects as `kubectl apply -k`, less namespace and labels."""
    files = {"InferenceService": "inferenceservice", "PersistentVolumeClaim": "pvc", "PodDisruptionBudget": "pdb",
             "ConfigMap": "model-config"}  # fmt: skip
    for doc in render():
        (plain,) = [d for d in yaml.safe_load_all((KSERVE_DIR / f"{files[doc['kind']]}.yaml").read_text()) if d]
        rendered = copy.deepcopy(doc)
        rendered["metadata"].pop("namespace")
        rendered["metadata"].pop("labels")
        assert rendered == plain, doc["kind"]


def test_vendored_schema_is_a_valid_draft7_schema_of_reasonable_size():
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    assert SCHEMA_FILE.stat().st_size < 1_500_000
    assert "KServe v" in schema["$comment"]
    notice = (SCHEMA_FILE.parent / "NOTICE").read_text()
    assert "Apache License" in notice and "Commit:" in notice
    assert (SCHEMA_FILE.parent / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_inferenceservice_matches_the_kserve_schema():
    errors = schema_errors(isvc())
    assert not errors, "InferenceService is invalid for KServe's v1beta1 schema:\n" + "\n".join(errors)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_inferenceservice_metadata_is_valid_object_meta(version: str):
    # The CRD schema says only `metadata: {type: object}`; the API server checks it as ObjectMeta.
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": isvc()["metadata"]}
    kubernetes_validate.validate(probe, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_other_objects_match_kubernetes_schemas(version: str):
    errors = []
    for doc in render():
        if doc["kind"] == "InferenceService":
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{doc['kind']}: {exc.message}")
    assert not errors, f"deploy/kserve is invalid for Kubernetes {version}:\n" + "\n".join(errors)


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set `value` at a dotted path; in lists a part is an index or the `name` of an item."""
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)] if part.isdigit() else next(item for item in node if item.get("name") == part)
        else:
            node = node[part]
    node[last] = value
    return doc


def test_strictness_misspelled_field_is_rejected():
    doc = _set(isvc(), "spec.predictor.protocolVersoin", "v2")
    assert not schema_errors(doc, strict_fields=False), "without the strict transform jsonschema accepts it"
    errors = schema_errors(doc)
    assert any("protocolVersoin" in e and e.startswith("spec.predictor:") for e in errors), errors


def test_protocol_version_is_not_a_predictor_field():
    # v1beta1 has protocolVersion on the model/framework specs only; a custom container declares its
    # protocol with the PROTOCOL env var instead. kubectl would reject this as an unknown field.
    errors = schema_errors(_set(isvc(), "spec.predictor.protocolVersion", "v2"))
    assert any("protocolVersion" in e for e in errors), errors


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.predictor.scaleMetric", "gpu", "is not one of"),  # enum
        ("spec.predictor.minReplicas", "2", "is not of type 'integer'"),
        ("spec.predictor.containers.0.ports.http1.containerPort", "8080", "is not of type 'integer'"),
        # An unquoted YAML number where Kubernetes wants a string (env values always are strings).
        ("spec.predictor.containers.0.env.CNN_POLL_INTERVAL_S.value", 2, "is not of type 'string'"),
        ("spec.predictor.containers.0.resources.limits.memory", "2 GiB", "does not match"),  # quantity pattern
        ("spec.predictor.containers.0.volumeMounts.model-repository.readOnly", "true", "is not of type 'boolean'"),
        ("spec.predictor.containers.0.readinessProbe.httpGetter", {"path": "/"}, "Additional properties"),
        ("spec.predictor.volumes.model-repository.persistentVolumeClaim.claimName", None, "is not of type 'string'"),
    ],
)
def test_bad_manifests_are_rejected(path: str, value: Any, expected: str):
    errors = schema_errors(_set(isvc(), path, value))
    assert any(expected in e for e in errors), f"{path}={value!r} not rejected as expected: {errors}"


def test_missing_required_field_is_rejected():
    doc = isvc()
    del doc["spec"]["predictor"]["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in schema_errors(doc))


def test_custom_predictor_speaks_v2_on_the_ports_the_server_listens_on(monkeypatch: pytest.MonkeyPatch):
    c = container()
    s = settings(monkeypatch)
    assert "model" not in predictor() and "storageUri" not in predictor()
    assert c["name"] == "kserve-container"
    # KServe's webhook accepts only v1 or v2 here; v2 = Open Inference Protocol.
    assert env()["PROTOCOL"]["value"] == "v2"
    # KServe's convention for custom containers: the first port, named http1, is HTTP/1; the one named
    # h2c is gRPC. They must be the ports the server listens on.
    assert [p["name"] for p in c["ports"]] == ["http1", "h2c"]
    assert all(p.get("protocol", "TCP") == "TCP" for p in c["ports"])
    assert container_port(c, "http1") == s.port
    assert s.grpc_port, "the gRPC server is off"
    assert container_port(c, "h2c") == s.grpc_port
    # Reachable through KServe's Service, i.e. on the pod IP.
    assert binds_all_interfaces(s.host), s.host
    # Prometheus scrapes the metrics route on the HTTP port.
    annotations = predictor()["annotations"]
    assert annotations["prometheus.io/port"] == str(s.port)
    assert annotations["prometheus.io/path"] in get_paths(s)
    assert isvc()["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in ("Standard", "RawDeployment")


def test_probes(monkeypatch: pytest.MonkeyPatch):
    c = container()
    # GET routes of the app on the HTTP port; liveness passes while models load, readiness does not.
    check_probes(c, settings(monkeypatch))
    assert ("startupProbe" in c) == ("startupProbe" in k8s_container(render_k8s("base")))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in c:
            assert c[probe]["periodSeconds"] >= 1 and c[probe]["failureThreshold"] >= 1, probe
    # The startup probe covers model loading and warm-up (minutes), so liveness cannot kill a loading pod.
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_service_settings(monkeypatch: pytest.MonkeyPatch):
    values = {name: entry.get("value") for name, entry in env().items()}
    assert all(isinstance(v, str) for v in values.values() if v is not None)
    # Every CNN_* value is a setting of the service and parses (service_settings checks both).
    s = settings(monkeypatch)
    # Versions change only through the volume: the repository API's load/unload stay off, with or
    # without the optional API key Secret, and the repository is rescanned while the pod runs.
    assert s.model_control_allowed is False
    with_key = service_settings({**pod_env(container(), render()), "CNN_API_KEY": "from-the-secret"}, monkeypatch)
    assert with_key.model_control_allowed is False
    assert s.poll_interval_s > 0
    # The API key is a secret, never a literal value.
    assert "secretKeyRef" in env()["CNN_API_KEY"]["valueFrom"]
    assert "value" not in env()["CNN_API_KEY"]
    # A custom container with STORAGE_URI would get KServe's storage initializer over /mnt/models.
    assert "STORAGE_URI" not in values


def test_settings_agree_with_the_k8s_base(monkeypatch: pytest.MonkeyPatch):
    # "Every other setting keeps its default (the values deploy/k8s/base sets)": the service configured by
    # either tree differs only in where it listens and where it finds the models.
    base_docs = render_k8s("base")
    base = service_settings(pod_env(k8s_container(base_docs), base_docs), monkeypatch).model_dump()
    s = settings(monkeypatch)
    where = {"port", "grpc_port", "model_repository"}
    differ = sorted(k for k, v in s.model_dump().items() if k not in where and v != base[k])
    assert not differ, {k: (getattr(s, k), base[k]) for k in differ}
    pre_stop = container().get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert predictor()["terminationGracePeriodSeconds"] > pause + s.shutdown_timeout_s


def test_model_repository_is_the_pvc_mounted_read_only(monkeypatch: pytest.MonkeyPatch):
    repository = settings(monkeypatch).model_repository
    mounts = [m for m in container()["volumeMounts"] if Path(m["mountPath"]) == repository]
    assert len(mounts) == 1, f"no volume is mounted where the service looks for models ({repository})"
    assert mounts[0]["readOnly"] is True
    assert "subPath" not in mounts[0], "the whole volume is the repository"
    volumes = {v["name"]: v for v in predictor()["volumes"]}
    assert mounts[0]["name"] in volumes, mounts[0]
    claim = volumes[mounts[0]["name"]]["persistentVolumeClaim"]
    assert claim.get("readOnly") is True
    pvc = named(render(), "PersistentVolumeClaim", claim["claimName"])
    assert pvc is not None
    # Several replicas on several nodes mount it at once.
    assert set(pvc["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}
    assert "ReadWriteOnce" not in pvc["spec"]["accessModes"]


def test_the_model_config_file_is_the_mounted_configmap(monkeypatch: pytest.MonkeyPatch):
    s = settings(monkeypatch)
    sources = mounted_config(predictor(), container(), render(), s.model_config_file)
    assert sources and {source.base_path.parent for source in sources} == {s.model_repository}


def test_image_resources_and_security_match_the_k8s_base():
    base_docs = render_k8s("base")
    base = k8s_container(base_docs)
    base_pod = one(base_docs, "Deployment")["spec"]["template"]["spec"]
    c = container()
    assert c["image"] == base["image"] == "cnn-serving:cpu"
    assert c["resources"] == base["resources"]
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert c["securityContext"] == base["securityContext"]
    assert predictor()["securityContext"] == base_pod["securityContext"]
    assert predictor()["automountServiceAccountToken"] is False
    # With a read-only root filesystem, /tmp must be a writable volume.
    volumes = {v["name"]: v for v in predictor()["volumes"]}
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]
    assert env()["HOME"]["value"] == "/tmp"


def test_autoscaling_by_kserve():
    p = predictor()
    hpa = one(render_k8s("base"), "HorizontalPodAutoscaler")["spec"]
    assert 1 <= p["minReplicas"] <= p["maxReplicas"]
    assert (p["minReplicas"], p["maxReplicas"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert p["scaleMetric"] == "cpu"
    assert p["scaleTarget"] == hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert p["deploymentStrategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pdb_selects_the_predictor_pods_only():
    selector = one(render(), "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    # The labels KServe puts on predictor pods, plus those copied from the InferenceService.
    pod_labels = {
        "serving.kserve.io/inferenceservice": "cnn-serving",
        "component": "predictor",
        **isvc()["metadata"].get("labels", {}),
        **predictor().get("labels", {}),
    }
    assert selector and selector.items() <= pod_labels.items()
    # Both trees may share a namespace: no selector of deploy/k8s may match the KServe pods.
    base = render_k8s("base")
    k8s_selectors = [
        one(base, "Deployment")["spec"]["selector"]["matchLabels"],
        one(base, "Service")["spec"]["selector"],
        one(base, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for k8s_selector in k8s_selectors:
        assert not k8s_selector.items() <= pod_labels.items(), k8s_selector
