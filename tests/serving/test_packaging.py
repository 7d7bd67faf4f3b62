"""The serving image and its Kubernetes manifests, checked without Docker or a cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "serving" / "k8s").glob("*.yaml"))
SECRET_WORDS = ("TOKEN", "PASSWORD", "SECRET", "ACCESS_KEY")


def _documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def _deployments() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "Deployment"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schema(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, "1.33", strict=True)


def test_deployments_probe_limit_and_keep_secrets_by_reference() -> None:
    deployments = _deployments()
    assert set(deployments) == {"churn-serving-stable", "churn-serving-canary"}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/health", name
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        for env in container["env"]:
            if any(word in env["name"] for word in SECRET_WORDS):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]


def test_the_service_selects_both_tracks_which_differ() -> None:
    (service,) = [d for d in _documents() if d["kind"] == "Service"]
    selector = service["spec"]["selector"].items()
    tracks = {}
    for name, deployment in _deployments().items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector <= labels.items(), name
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SERVING_TRACK"] == labels["track"], name
        tracks[labels["track"]] = env["SERVING_STABLE_ALIAS"]
    assert tracks == {"stable": "champion", "canary": "challenger"}


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.task", "serving/Dockerfile"])
def test_dockerfiles_copy_what_exists_pin_bases_and_pip_only_pinned_files(dockerfile: str) -> None:
    text = (REPO / dockerfile).read_text()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE):
        sources = [part for part in line.split()[:-1] if not part.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    for image in re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE):
        assert ":" in image and not image.endswith(":latest"), f"{dockerfile}: FROM {image}"
    for command in re.findall(r"pip install ([^\n]+)", text):
        pinned = "-c /" in command and "-r " in command
        assert pinned or "--no-deps" in command, f"{dockerfile}: pip install {command}"
