"""The serving image and its Kubernetes manifests, checked without Docker or a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "serving" / "k8s").glob("*.yaml"))
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "ACCESS_KEY")
KUBERNETES_VERSION = "1.33"


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "Deployment"}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def test_there_are_two_deployments_and_a_service() -> None:
    assert {p.name for p in MANIFESTS} >= {
        "deployment-stable.yaml",
        "deployment-canary.yaml",
        "service.yaml",
    }
    assert set(_deployments()) == {"churn-serving-stable", "churn-serving-canary"}
    assert [d["kind"] for d in _documents()].count("Service") == 1
    assert {d["metadata"]["namespace"] for d in _documents()} == {"mlops"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schema(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path.name} has no documents"
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", ["churn-serving-stable", "churn-serving-canary"])
def test_deployment_probes_resources_and_security(name: str) -> None:
    deployment = _deployments()[name]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    container = _container(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    assert all(resources["requests"].values()) and all(resources["limits"].values())
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/mlops"} <= mounts


@pytest.mark.parametrize("name", ["churn-serving-stable", "churn-serving-canary"])
def test_secrets_are_passed_by_reference_only(name: str) -> None:
    env = _env(_container(_deployments()[name]))
    secret_names = [n for n in env if any(word in n for word in SECRET_WORDS)]
    assert "SERVING_ADMIN_TOKEN" in secret_names
    for env_name in secret_names:
        entry = env[env_name]
        assert "value" not in entry, f"{name}: {env_name} has a literal value"
        assert "secretKeyRef" in entry["valueFrom"], f"{name}: {env_name} is not a secretKeyRef"
    assert env["SERVING_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "churn-serving-admin",
        "key": "token",
    }


def test_the_service_selects_both_tracks_which_differ() -> None:
    (service,) = [d for d in _documents() if d["kind"] == "Service"]
    selector = service["spec"]["selector"]
    assert selector == {"app.kubernetes.io/name": "churn-serving"}
    tracks: dict[str, str] = {}
    serving_tracks: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name, deployment in _deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"the Service does not select {name}"
        env = _env(_container(deployment))
        tracks[name] = labels["track"]
        serving_tracks[name] = env["SERVING_TRACK"]["value"]
        aliases[labels["track"]] = env["SERVING_STABLE_ALIAS"]["value"]
        assert serving_tracks[name] == tracks[name], name
    assert len(set(tracks.values())) == len(tracks) == 2
    assert len(set(serving_tracks.values())) == len(serving_tracks) == 2
    assert aliases == {"stable": "champion", "canary": "challenger"}
