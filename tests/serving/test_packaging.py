"""The serving image and its Kubernetes manifests, checked without Docker or a cluster."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "serving" / "k8s").glob("*.yaml"))
DOCKERFILES = ["Dockerfile", "Dockerfile.task", "serving/Dockerfile"]
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


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (REPO / dockerfile).read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_copy_sources_exist(dockerfile: str) -> None:
    copies = [args for keyword, args in _instructions(dockerfile) if keyword == "COPY"]
    assert copies
    for arguments in copies:
        if any(a.startswith("--from=") for a in arguments.split()):
            continue  # copies from another stage, not from the build context
        parts = [p for p in shlex.split(arguments) if not p.startswith("--")]
        if parts and parts[0].startswith("["):
            parts = json.loads(" ".join(parts))
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_base_images_are_pinned(dockerfile: str) -> None:
    images = [args.split()[0] for keyword, args in _instructions(dockerfile) if keyword == "FROM"]
    assert images
    stages = {
        args.split()[-1].lower()
        for keyword, args in _instructions(dockerfile)
        if keyword == "FROM" and " as " in args.lower()
    }
    for image in images:
        if image.lower() in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{dockerfile}: FROM {image} has no tag"
        assert tag != "latest", f"{dockerfile}: FROM {image} is not a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_pip_installs_only_constrained_requirements_or_no_deps(dockerfile: str) -> None:
    commands = [
        command
        for keyword, args in _instructions(dockerfile)
        if keyword == "RUN"
        for command in re.split(r"&&|;", args)
        if re.search(r"\bpip3? install\b", command)
    ]
    assert commands
    for command in commands:
        words = shlex.split(command.split("install", 1)[1])
        requirements: list[str] = []
        constraints: list[str] = []
        positional: list[str] = []
        flags: set[str] = set()
        while words:
            word = words.pop(0)
            if word in {"-r", "--requirement"}:
                requirements.append(words.pop(0))
            elif word in {"-c", "--constraint"}:
                constraints.append(words.pop(0))
            elif word.startswith("-"):
                flags.add(word)
            else:
                positional.append(word)
        assert flags <= {"--no-cache-dir", "--no-deps"}, f"{dockerfile}: {command}"
        if "--no-deps" in flags:
            continue
        assert requirements and not positional, f"{dockerfile}: {command} installs unpinned"
        assert [Path(c).name for c in constraints] == ["constraints.txt"], (
            f"{dockerfile}: {command} is not constrained by constraints.txt"
        )


def test_serving_image_runs_as_non_root_with_a_health_check() -> None:
    instructions = dict(_instructions("serving/Dockerfile"))
    assert instructions["USER"] == "50000"
    assert "http://127.0.0.1:8000/health" in instructions["HEALTHCHECK"]
    assert instructions["EXPOSE"] == "8000"
    command = json.loads(instructions["CMD"])
    assert command[:3] == ["uvicorn", "--factory", "mlops_serving.app:create_app"]
