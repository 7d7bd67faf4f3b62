"""The cluster side of Kubernetes mode (deploy/): every manifest valid against the Kubernetes
schema; the namespace, data volume and resource defaults the step pods rely on; the step pods' RBAC
(granting what the release steps call, no more); what Airflow's workers need to launch the pods;
and the Helm values, whose settings are ones the pipeline reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_steps.core.sections import KubernetesSettings
from mlops_steps.core.settings import load_settings
from tests.settings_names import names_read_by_core

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.33"


def _documents(name: str = "rbac.yaml") -> dict[str, dict[str, Any]]:
    """The documents of one manifest file, by kind."""
    path = REPO / "deploy" / "k8s" / name
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


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
    # release/targets/kubernetes: read and patch Deployments; release/builders/kaniko: the Job.
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


def test_namespace_volume_and_resource_defaults_match_the_settings() -> None:
    k8s = KubernetesSettings()
    docs = _documents("namespace.yaml")
    assert set(docs) == {"Namespace", "PersistentVolumeClaim", "LimitRange"}
    assert docs["Namespace"]["metadata"]["name"] == k8s.namespace
    # Step pods run non-root with RuntimeDefault seccomp: they pass the restricted profile.
    assert docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    claim = docs["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == k8s.data_pvc
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # steps of a run share it
    (limits,) = docs["LimitRange"]["spec"]["limits"]
    assert set(limits["defaultRequest"]) == set(limits["default"]) == {"cpu", "memory"}


def test_airflow_workers_may_launch_step_pods_and_nothing_else() -> None:
    docs = _documents("airflow-launcher-rbac.yaml")
    assert set(docs) == {"Role", "RoleBinding"}
    assert {d["metadata"]["namespace"] for d in docs.values()} == {KubernetesSettings.namespace}
    granted = {
        (resource, verb)
        for rule in docs["Role"]["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert {("pods", "create"), ("pods", "delete"), ("pods", "watch"), ("pods/log", "get")} <= (
        granted
    )
    assert not {resource for resource, _ in granted} & {"secrets", "deployments", "*"}
    values = yaml.safe_load((REPO / "deploy" / "airflow" / "values.yaml").read_text())
    (subject,) = docs["RoleBinding"]["subjects"]
    assert subject["name"] == values["workers"]["serviceAccount"]["name"]


def test_helm_values_only_set_settings_the_pipeline_reads() -> None:
    values = yaml.safe_load((REPO / "deploy" / "airflow" / "values.yaml").read_text())
    env = {entry["name"]: entry["value"] for entry in values["env"]}
    for name in env:
        setting = name.removeprefix("AIRFLOW_VAR_")
        assert setting in names_read_by_core(), f"values.yaml sets {name}, which nothing reads"
    assert values["executor"] in {"KubernetesExecutor", "CeleryExecutor"}
    assert env["MLOPS_RUNNER"] == "kubernetes"
    assert env["MLOPS_K8S_NAMESPACE"] == KubernetesSettings.namespace
    # The data plane is in the object store (common/dataplane.py), not on a shared volume.
    assert env["MLOPS_DATA_ROOT"].startswith("s3://")
    # Secrets only by reference: no env entry carries a credential.
    for name in env:
        assert not any(word in name for word in ("PASSWORD", "TOKEN", "SECRET", "CONN_")), name
    assert {s["envName"] for s in values["secret"]} >= {
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        "MLOPS_WEBHOOK_SECRET",
    }
