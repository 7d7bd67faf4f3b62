"""The NetworkPolicies (deploy/k8s/network-policies.yaml) and the serving Ingress, read as YAML and
matched against the pods they protect: the serving Deployments' pod templates, and the step pods as
the DAGs render them (KubernetesPodOperator, no cluster). Each policy admits exactly its peers and
ports; the admin routes are reachable only from the release steps (the Ingress routes only the
prediction paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from mlops_provider.operators.step import KUBERNETES_API_LABEL, SERVING_CLIENT_LABEL
from tests.dags.helpers import load_dags, render_context, rendered

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "mlops"
SERVING_PORT = 8000
STEP = {"app.kubernetes.io/name": "mlops-step"}
RELEASE_STEP = {**STEP, SERVING_CLIENT_LABEL: "true"}
API_STEP = {**STEP, KUBERNETES_API_LABEL: "true"}
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
MLFLOW = {
    "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}],
    "ports": [{"protocol": "TCP", "port": 5000}],
}
PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
OBJECT_STORE = {
    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE, "169.254.0.0/16"]}}],
    "ports": [{"protocol": "TCP", "port": 443}],
}


def _documents(*paths: str) -> list[dict[str, Any]]:
    return [d for path in paths for d in yaml.safe_load_all((REPO / path).read_text()) if d]


def _policies() -> dict[str, dict[str, Any]]:
    documents = _documents("deploy/k8s/network-policies.yaml")
    assert {d["kind"] for d in documents} == {"NetworkPolicy"}
    return {d["metadata"]["name"]: d for d in documents}


def _serving_pods() -> dict[str, dict[str, Any]]:
    """Pod template of each serving Deployment, by Deployment name."""
    documents = _documents(
        "serving/k8s/deployment-stable.yaml", "serving/k8s/deployment-canary.yaml"
    )
    return {d["metadata"]["name"]: d["spec"]["template"] for d in documents}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def test_every_policy_is_in_the_namespace_and_names_its_directions() -> None:
    policies = _policies()
    assert set(policies) == {
        "churn-serving",
        "mlops-steps",
        "mlops-release-steps",
        "mlops-steps-kubernetes-api",
    }
    for name, policy in policies.items():
        assert policy["metadata"]["namespace"] == NAMESPACE, name
        spec = policy["spec"]
        # An omitted direction is not restricted; an empty selector would pick every pod.
        assert spec["podSelector"]["matchLabels"], name
        for direction in spec["policyTypes"]:
            for rule in spec.get(direction.lower(), []):
                peers = rule.get("from" if direction == "Ingress" else "to")
                assert peers and rule["ports"], f"{name}: a {direction} rule open to any peer/port"


def test_the_serving_policy_selects_both_tracks_and_no_step_pod() -> None:
    selector = _policies()["churn-serving"]["spec"]["podSelector"]
    pods = _serving_pods()
    assert set(pods) == {"churn-serving-stable", "churn-serving-canary"}
    for name, template in pods.items():
        assert _selects(selector, template["metadata"]["labels"]), name
        (container,) = template["spec"]["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": SERVING_PORT}], name
    assert not _selects(selector, {**RELEASE_STEP, "app.kubernetes.io/part-of": "airflow-mlops"})


def test_serving_pods_admit_only_the_ingress_controller_and_the_release_steps() -> None:
    spec = _policies()["churn-serving"]["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
                }
            ],
            "ports": [{"protocol": "TCP", "port": SERVING_PORT}],
        },
        {
            "from": [{"podSelector": {"matchLabels": RELEASE_STEP}}],
            "ports": [{"protocol": "TCP", "port": SERVING_PORT}],
        },
    ]
    # Out: name lookups, the model from MLflow, the prediction log in the object store.
    assert spec["egress"] == [DNS, MLFLOW, OBJECT_STORE]


def test_step_pods_reach_only_dns_mlflow_and_the_object_store() -> None:
    spec = _policies()["mlops-steps"]["spec"]
    assert spec["podSelector"] == {"matchLabels": STEP}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    assert spec["egress"] == [DNS, MLFLOW, OBJECT_STORE]


def test_release_steps_also_reach_the_serving_port_and_api_steps_the_api_server() -> None:
    policies = _policies()
    release = policies["mlops-release-steps"]["spec"]
    assert release["podSelector"] == {"matchLabels": RELEASE_STEP}
    assert release["policyTypes"] == ["Egress"]
    (rule,) = release["egress"]
    (peer,) = rule["to"]
    assert peer == {"podSelector": policies["churn-serving"]["spec"]["podSelector"]}
    assert rule["ports"] == [{"protocol": "TCP", "port": SERVING_PORT}]

    api = policies["mlops-steps-kubernetes-api"]["spec"]
    assert api["podSelector"] == {"matchLabels": API_STEP}
    assert api["policyTypes"] == ["Egress"]
    (rule,) = api["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": cidr}} for cidr in PRIVATE]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]


def test_the_ingress_routes_only_the_prediction_paths_to_the_serving_service() -> None:
    (ingress,) = _documents("deploy/k8s/serving-ingress.yaml")
    assert ingress["kind"] == "Ingress" and ingress["metadata"]["namespace"] == NAMESPACE
    (service,) = _documents("serving/k8s/service.yaml")
    routes = {
        (path["path"], path["pathType"]): path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    target = {"name": service["metadata"]["name"], "port": {"name": "http"}}
    # Exact paths only: a Prefix ("/", "/predict") would also forward /admin/* or more.
    assert routes == {("/predict", "Exact"): target, ("/predict/batch", "Exact"): target}
    assert "defaultBackend" not in ingress["spec"]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "http" and port["targetPort"] == "http"
    for name, template in _serving_pods().items():
        assert _selects(
            {"matchLabels": service["spec"]["selector"]}, template["metadata"]["labels"]
        ), name
    routes_served = (REPO / "serving/mlops_serving/api/routes/predict.py").read_text()
    assert '@router.post("/predict"' in routes_served
    assert '@router.post("/predict/batch"' in routes_served


@pytest.fixture
def step_pods(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """Every step pod of every DAG as the KubernetesPodOperator builds it, with releases going to
    the serving Deployments (the cluster's deploy target), by ``dag_id.task_id``."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    monkeypatch.setenv("MLOPS_DATA_ROOT", "/data")
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    pods = {}
    for dag_id, dag in sorted(load_dags(monkeypatch, "kubernetes").items()):
        for task in dag.tasks:
            if isinstance(task, KubernetesPodOperator):
                pod = rendered(task).build_pod_request_obj(
                    render_context(task.dag, task.task_id), dry_run=True
                )
                pods[f"{dag_id}.{task.task_id}"] = ApiClient().sanitize_for_serialization(pod)
    return pods


def _holds_admin_token(pod: dict[str, Any]) -> bool:
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    return any(e["name"] == "SERVING_ADMIN_TOKEN" for e in container.get("env", []))


def test_the_policies_select_the_step_pods_the_dags_launch(
    step_pods: dict[str, dict[str, Any]],
) -> None:
    policies = {name: p["spec"]["podSelector"] for name, p in _policies().items()}
    assert {"mlops_training__churn.train", "mlops_deployment__churn.canary"} <= set(step_pods)
    release, api = set(), set()
    for name, pod in step_pods.items():
        labels = pod["metadata"]["labels"]
        assert _selects(policies["mlops-steps"], labels), name
        assert not _selects(policies["churn-serving"], labels), name
        if _selects(policies["mlops-release-steps"], labels):
            release.add(name)
        if _selects(policies["mlops-steps-kubernetes-api"], labels):
            api.add(name)
        # Network reach follows the credentials the pod holds.
        assert (name in release) == _holds_admin_token(pod), name
        assert (name in api) == bool(pod["spec"]["automountServiceAccountToken"]), name
    assert {"mlops_deployment__churn.canary", "mlops_deployment__churn.promote"} <= release
    assert {"mlops_deployment__churn.canary", "mlops_deployment__churn.promote"} <= api
    assert not {name for name in release | api if name.startswith("mlops_training__churn.")}
    assert not {name for name in release | api if name.startswith("mlops_monitoring__churn.")}
