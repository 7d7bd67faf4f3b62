"""The step pods' RBAC (deploy/k8s/): valid against the Kubernetes schema, bound to the
ServiceAccount the pods run as, and granting what the release steps call, no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_steps.config import KubernetesSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.33"


def _documents() -> dict[str, dict[str, Any]]:
    docs = [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schema(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_role_is_bound_to_the_step_service_account() -> None:
    k8s = KubernetesSettings()
    docs = _documents()
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding"}
    assert {d["metadata"]["namespace"] for d in docs.values()} == {k8s.namespace}
    assert docs["ServiceAccount"]["metadata"]["name"] == k8s.service_account
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": docs["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": k8s.service_account, "namespace": k8s.namespace}
    ]


def test_the_role_grants_exactly_what_the_steps_call() -> None:
    deploy = load_settings().deploy
    granted = {
        (group, resource, verb)
        for rule in _documents()["Role"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # targets_kubernetes: read and patch Deployments; imagebuild (kaniko): the build Job.
    needed = {
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs/status", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
    }
    assert needed <= granted
    assert not {verb for _, _, verb in granted} & {"*", "update", "escalate", "bind", "impersonate"}
    assert not {resource for _, resource, _ in granted} & {"secrets", "*", "roles", "rolebindings"}
    (deployments,) = [r for r in _documents()["Role"]["rules"] if "deployments" in r["resources"]]
    assert set(deployments["resourceNames"]) == {deploy.stable_deployment, deploy.canary_deployment}
