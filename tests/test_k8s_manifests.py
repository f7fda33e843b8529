"""Render the Kubernetes manifests with kustomize and check them, fully offline.

Every rendered object is validated (strictly: unknown fields are errors) against the Kubernetes
JSON schemas bundled in the `kubernetes-validate` package, for the oldest and the newest
Kubernetes version we target; then the properties the service relies on are asserted.
Rendering uses a `kustomize` binary if there is one, else `kubectl kustomize`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from ipaddress import ip_address
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

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
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


# --------------------------------------------------------------------------------------------- the service
# What the service makes of a manifest: its environment parsed by the real Settings class, and the
# routes of the real app. Shared with tests/test_kserve_manifest.py.


def named(docs: list[dict[str, Any]], kind: str, name: str, optional: bool = False) -> dict[str, Any] | None:
    """The rendered object of `kind` called `name`; a reference to a missing one must be optional."""
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert found or optional, f"{kind} {name!r} is referenced but not among the rendered objects (nor optional)"
    return found[0] if found else None


def pod_env(c: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The literal environment the kubelet gives container `c`: envFrom, then env (which wins).

    Every ConfigMap and Secret referenced must be among `docs`, unless the reference is optional.
    Variables from Secrets are left out: their values are not in the manifests.
    """
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]
            config = named(docs, "ConfigMap", ref["name"], ref.get("optional", False))
            data = config.get("data", {}) if config else {}
            env.update({source.get("prefix", "") + key: value for key, value in data.items()})
        if "secretRef" in source:
            named(docs, "Secret", source["secretRef"]["name"], source["secretRef"].get("optional", False))
    for entry in c.get("env", []):
        env.pop(entry["name"], None)
        ref = entry.get("valueFrom")
        if ref is None:
            env[entry["name"]] = entry.get("value", "")
        elif "configMapKeyRef" in ref:
            key_ref = ref["configMapKeyRef"]
            config = named(docs, "ConfigMap", key_ref["name"], key_ref.get("optional", False))
            data = config.get("data", {}) if config else {}
            assert key_ref["key"] in data or key_ref.get("optional", False), key_ref
            if key_ref["key"] in data:
                env[entry["name"]] = data[key_ref["key"]]
        elif "secretKeyRef" in ref:
            named(docs, "Secret", ref["secretKeyRef"]["name"], ref["secretKeyRef"].get("optional", False))
    return env


def settings_env_names() -> set[str]:
    """The environment variables (upper case) the service's Settings reads: CNN_<FIELD> or a field's aliases."""
    from pydantic import AliasChoices

    from service.core.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def service_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's Settings in a process whose environment holds `env` and nothing else of the service's.

    Every CNN_* variable of `env` must be a setting: the service would silently ignore a misspelt one.
    """
    from service.core.settings import Settings

    known = settings_env_names()
    unknown = sorted(name for name in env if name.upper().startswith("CNN_") and name.upper() not in known)
    assert not unknown, f"the service has no such settings (it would ignore them): {unknown}"
    for name in list(os.environ):
        if name.upper().startswith("CNN_") or name.upper() in known:
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.upper() in known:
            monkeypatch.setenv(name, value)
    return Settings()


def get_paths(settings: Any) -> set[str]:
    """The paths of the GET routes of the app built with `settings` (creating it loads no model)."""
    from fastapi.routing import iter_route_contexts

    from service.app import create_app

    app = create_app(settings)
    # app.routes holds included routers as one node each (FastAPI >= 0.137); this flattens them.
    return {route.path for route in iter_route_contexts(app.routes) if "GET" in (route.methods or ())}


def container_port(c: dict[str, Any], port: int | str) -> int:
    """The container port that `port` (of a probe, a Service's targetPort) names: a number or a port's name."""
    declared = c.get("ports", [])
    if isinstance(port, str):
        by_name = {p["name"]: p["containerPort"] for p in declared if "name" in p}
        assert port in by_name, f"{port!r} is not a named port of container {c['name']}: {sorted(by_name)}"
        return by_name[port]
    assert port in {p["containerPort"] for p in declared}, f"port {port} is not declared by container {c['name']}"
    return port


def binds_all_interfaces(host: str) -> bool:
    try:
        return ip_address(host).is_unspecified
    except ValueError:
        return False


def check_probes(c: dict[str, Any], settings: Any) -> None:
    """Each probe of `c` asks the server where it listens: HTTP probes a GET route on settings.port, gRPC
    probes settings.grpc_port. Liveness and startup pass before any model is loaded; readiness does not."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    paths = get_paths(settings)
    # No lifespan: the app answers as it does while the models are still loading.
    loading = TestClient(create_app(settings))
    probes = [name for name in ("startupProbe", "livenessProbe", "readinessProbe") if name in c]
    assert "livenessProbe" in probes and "readinessProbe" in probes, probes
    for name in probes:
        probe = c[name]
        if "httpGet" in probe:
            path = probe["httpGet"]["path"].split("?")[0]
            assert path in paths, f"{name} asks {path}, which is no GET route of the app"
            assert container_port(c, probe["httpGet"]["port"]) == settings.port, f"{name} is not on the HTTP port"
            assert probe["httpGet"].get("scheme", "HTTP") == "HTTP", name
            status = loading.get(probe["httpGet"]["path"]).status_code
            if name == "readinessProbe":
                assert status != 200, f"{name} passes before any model is loaded"
            else:
                assert status == 200, f"{name} fails while models load ({status}): the kubelet would restart the pod"
        elif "grpc" in probe:
            assert settings.grpc_port, f"{name} uses gRPC, which the settings turn off"
            assert container_port(c, probe["grpc"]["port"]) == settings.grpc_port, f"{name} is not on the gRPC port"
        elif "tcpSocket" in probe:
            assert container_port(c, probe["tcpSocket"]["port"]) in (settings.port, settings.grpc_port), name
        else:
            pytest.fail(f"{name} checks nothing of the server: {probe}")


def image_repository_paths() -> set[Path]:
    """Where the Dockerfile puts the bundled model repository in the image."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return {Path(dest) for dest in re.findall(r"^COPY\s+(?:--\S+\s+)*model_repository/?\s+(\S+)\s*$", dockerfile, re.M)}


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
    expected = ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert kinds == sorted(expected)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_probes_and_graceful_shutdown(kustomization: str, monkeypatch: pytest.MonkeyPatch):
    docs = render(kustomization)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    settings = service_settings(pod_env(c, docs), monkeypatch)
    # The ports the container declares (and the Service targets by name) are those the server listens on.
    assert container_port(c, "http") == settings.port
    assert settings.grpc_port, "the gRPC server is off"
    assert container_port(c, "grpc") == settings.grpc_port
    # Readiness through gRPC health checking, which also checks the gRPC listener.
    assert "grpc" in c["readinessProbe"]
    check_probes(c, settings)
    # After SIGTERM (which follows preStop) uvicorn drains for up to CNN_SHUTDOWN_TIMEOUT_S; the kubelet
    # must wait longer than both together before it sends SIGKILL.
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    shutdown = settings.shutdown_timeout_s
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
def test_selectors_and_config_are_wired(kustomization: str, monkeypatch: pytest.MonkeyPatch):
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
    c = container(docs)
    # Every ConfigMap and Secret the container names is rendered (or optional), and its settings parse.
    settings = service_settings(pod_env(c, docs), monkeypatch)
    # Each Service port reaches the listener it is named for; targetPort is a number or a port's name.
    service_ports = {port["name"]: port for port in one(docs, "Service")["spec"]["ports"]}
    assert container_port(c, service_ports["http"]["targetPort"]) == settings.port
    assert container_port(c, service_ports["grpc"]["targetPort"]) == settings.grpc_port
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    # Reachable from other pods, with the repository API's load/unload off (no API key needed for that).
    assert binds_all_interfaces(settings.host), settings.host
    assert settings.model_control_allowed is False
    assert (
        service_settings({**pod_env(c, docs), "CNN_API_KEY": "from-the-secret"}, monkeypatch).model_control_allowed
        is False
    )
    # Prometheus scrapes the metrics route on the HTTP port.
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations["prometheus.io/port"] == str(settings.port)
    assert annotations["prometheus.io/path"] in get_paths(settings)

    refs = [e["configMapRef"]["name"] for e in c["envFrom"] if "configMapRef" in e]
    config = next(doc for doc in docs if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == refs[0])
    assert len(refs) == 1
    data = config["data"]
    assert all(key.startswith("CNN_") for key in data)
    # The models are the ones the image bundles, or a volume mounted where the settings look.
    mounts = {Path(m["mountPath"]) for m in c.get("volumeMounts", [])}
    assert settings.model_repository in image_repository_paths() | mounts, settings.model_repository
    assert settings.request_timeout_s > settings.queue_timeout_s
    # The model config file is the mounted ConfigMap's, and it names the bundled models.
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    sources = mounted_config(pod, c, docs, settings.model_config_file)
    assert {source.base_path.parent for source in sources} == {settings.model_repository}
    # The API key is a secret, never a ConfigMap value.
    assert "CNN_API_KEY" not in data
    api_key = next(e for e in c["env"] if e["name"] == "CNN_API_KEY")
    assert "secretKeyRef" in api_key["valueFrom"]
    assert "value" not in api_key


def mounted_config(pod: dict[str, Any], c: dict[str, Any], docs: list[dict[str, Any]], path: Path | None) -> list:
    """The model config file at ``path`` in the container: a ConfigMap key mounted as a directory (not
    subPath, so edits reach the running pod), parsed by the service's own reader."""
    from service.hosting.model_config import read_config

    assert path is not None, "CNN_MODEL_CONFIG is not set"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent))
    assert "subPath" not in mount and mount.get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"])
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        copy.write_text(config["data"][path.name])
        return read_config(copy)


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
