"""Render the Kubernetes manifests with kustomize and check them, fully offline.

Every rendered object is validated (strictly: unknown fields are errors) against the Kubernetes
JSON schemas bundled in the `kubernetes-validate` package, for the oldest and the newest
Kubernetes version we target; then the properties the service relies on are asserted.
Rendering uses a `kustomize` binary if there is one, else `kubectl kustomize`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

try:
    import kubernetes_validate
    import yaml
except ImportError as exc:  # pragma: no cover - a missing dev dependency must fail, not skip
    raise ImportError(
        "tests/test_k8s_manifests.py needs the `kubernetes-validate` package (dev extra): pip install -e '.[dev]'"
    ) from exc

K8S_DIR = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S_DIR / "overlays").glob("*/kustomization.yaml"))
KUSTOMIZATIONS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
# Oldest and newest Kubernetes minor versions the manifests must be valid for.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
IMAGE_REPOSITORY = "cnn-serving"
CONTAINER = "cnn-serving"


def kustomize_command() -> list[str]:
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    pytest.fail(
        "neither `kustomize` nor `kubectl` is on PATH; install one of them "
        "(kubectl >= 1.27 embeds kustomize v5) to render deploy/k8s"
    )


_rendered: dict[str, list[dict[str, Any]]] = {}


def render(kustomization: str) -> list[dict[str, Any]]:
    if kustomization not in _rendered:
        result = subprocess.run(
            [*kustomize_command(), str(K8S_DIR / kustomization)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"kustomize failed for {kustomization}:\n{result.stderr}"
        docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert docs, f"{kustomization} rendered no objects"
        _rendered[kustomization] = docs
    return _rendered[kustomization]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == CONTAINER)


def test_overlays_exist():
    assert {"cpu", "gpu"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifests_match_kubernetes_schemas(kustomization: str, version: str):
    errors = []
    for doc in render(kustomization):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    assert not errors, f"{kustomization} is invalid for Kubernetes {version}:\n" + "\n".join(errors)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_expected_objects(kustomization: str):
    kinds = sorted(doc["kind"] for doc in render(kustomization))
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_and_graceful_shutdown(kustomization: str):
    docs = render(kustomization)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port_names.get("http") == 8000
    # Readiness through gRPC health checking, on the port the server's gRPC listens on.
    grpc_port = int(one(docs, "ConfigMap")["data"]["CNN_GRPC_PORT"])
    assert port_names.get("grpc") == grpc_port
    assert c["readinessProbe"]["grpc"]["port"] == grpc_port
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("livenessProbe", "startupProbe"):
        if probe in c:
            assert c[probe]["httpGet"]["port"] in ("http", 8000)
    # After SIGTERM (which follows preStop) uvicorn drains for up to CNN_SHUTDOWN_TIMEOUT_S; the kubelet
    # must wait longer than both together before it sends SIGKILL.
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > 20
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    shutdown = float(one(docs, "ConfigMap")["data"]["CNN_SHUTDOWN_TIMEOUT_S"])
    assert grace > pause + shutdown, f"grace {grace} s <= preStop {pause} s + shutdown {shutdown} s"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_security_context(kustomization: str):
    docs = render(kustomization)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc.get("privileged", False)
    # With a read-only root filesystem, /tmp must be a writable volume.
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_resources_and_autoscaling(kustomization: str):
    docs = render(kustomization)
    resources = container(docs)["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_selectors_and_config_are_wired(kustomization: str):
    docs = render(kustomization)
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": one(docs, "Service")["spec"]["selector"],
        "PodDisruptionBudget": one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} selector is empty (it would select every pod)"
        assert selector.items() <= pod_labels.items(), f"{kind} selector does not match the pods"
    service_ports = {port["name"]: port for port in one(docs, "Service")["spec"]["ports"]}
    assert service_ports["http"]["targetPort"] == "http"
    assert service_ports["grpc"]["targetPort"] == "grpc"
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"

    config = one(docs, "ConfigMap")
    refs = [e["configMapRef"]["name"] for e in container(docs)["envFrom"] if "configMapRef" in e]
    assert refs == [config["metadata"]["name"]]
    data = config["data"]
    assert all(key.startswith("CNN_") for key in data)
    assert data["CNN_MODEL_REPOSITORY"] == "/app/model_repository"
    assert data["CNN_PORT"] == "8000"
    assert float(data["CNN_REQUEST_TIMEOUT_S"]) > float(data["CNN_QUEUE_TIMEOUT_S"])
    # The API key is a secret, never a ConfigMap value.
    assert "CNN_API_KEY" not in data
    api_key = next(e for e in container(docs)["env"] if e["name"] == "CNN_API_KEY")
    assert "secretKeyRef" in api_key["valueFrom"]


def image_tag(docs: list[dict[str, Any]]) -> str:
    image = container(docs)["image"]
    repository, _, tag = image.rpartition(":")
    assert repository.endswith(IMAGE_REPOSITORY), image
    return tag


@pytest.mark.parametrize("kustomization", ["base", "overlays/cpu"])
def test_cpu_variants_use_the_cpu_image_and_no_gpu(kustomization: str):
    docs = render(kustomization)
    assert image_tag(docs) == "cpu"
    resources = container(docs)["resources"]
    assert "nvidia.com/gpu" not in resources.get("limits", {})


def test_gpu_overlay_requests_one_gpu_and_uses_the_gpu_image():
    docs = render("overlays/gpu")
    assert image_tag(docs) == "gpu"
    c = container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod.get("tolerations", []))
    # Renamed, with its own selector label, so that it can run beside the CPU deployment.
    cpu_names = {(d["kind"], d["metadata"]["name"]) for d in render("overlays/cpu")}
    gpu_names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not cpu_names & gpu_names
    assert one(docs, "Service")["spec"]["selector"].get("app.kubernetes.io/variant") == "gpu"
