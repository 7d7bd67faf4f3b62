"""The serving chart (deploy/helm/mlops-serving): one model's Deployments, Service, Ingress,
NetworkPolicies and Role, rendered per model with the model's name as a value.

Its templates only substitute values (``{{ .Values.x }}``, checked below), so the test renders
them exactly as ``helm template`` would and validates every rendered object against the
Kubernetes schema. Rendered for churn, the chart is the manifests of serving/k8s and deploy/k8s
(which the release target and the scan read); rendered for another model, every name is the one
the pipeline's settings derive for it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlops_steps.core.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "mlops-serving"
TEMPLATES = sorted((CHART / "templates").glob("*.yaml"))
VALUE = re.compile(r"\{\{ \.Values\.(\w+) \}\}")
KUBERNETES_VERSION = "1.33"
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def render(**values: str) -> list[dict[str, Any]]:
    """The chart's objects for ``values`` over values.yaml, checked against its schema."""
    merged = {**DEFAULTS, **values}
    jsonschema.validate(merged, SCHEMA)
    documents = []
    for template in TEMPLATES:
        text = VALUE.sub(lambda m: str(merged[m.group(1)]), template.read_text())
        documents += [d for d in yaml.safe_load_all(text) if d]
    return documents


def by_kind(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in documents}


def _yaml(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((REPO / path).read_text()) if d]


def test_templates_only_substitute_declared_values() -> None:
    """Nothing but ``{{ .Values.x }}`` (so this test renders what helm renders) of values the
    schema declares, each inside a quoted YAML string (so the templates parse for the scan)."""
    declared = set(SCHEMA["properties"])
    assert set(DEFAULTS) == declared
    for template in TEMPLATES:
        text = template.read_text()
        assert VALUE.sub("", text).count("{{") == 0, template.name
        assert set(VALUE.findall(text)) <= declared, template.name
        for line in text.splitlines():
            if "{{" in line and not line.lstrip().startswith("#"):
                assert '"' in line.split(":", 1)[-1], (template.name, line)
        yaml.safe_load_all(text)  # plain YAML as it stands


@pytest.mark.parametrize("model", ["churn", "breast_cancer"])
def test_rendered_objects_validate_against_the_kubernetes_schema(model: str) -> None:
    documents = render(model=model, name=model.replace("_", "-"))
    assert {d["kind"] for d in documents} == {
        "Deployment", "Service", "Ingress", "NetworkPolicy", "Role", "RoleBinding",
    }  # fmt: skip
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_values_the_schema_refuses() -> None:
    for bad in ({"name": "Breast_Cancer"}, {"name": "x" * 41}, {"model": ""}, {"extra": "1"},
                {"mlflowTrackingUri": "mlflow:5000"}):  # fmt: skip
        with pytest.raises(jsonschema.ValidationError):
            render(**bad)


def test_rendered_for_churn_it_is_the_shipped_manifests() -> None:
    rendered = by_kind(render())
    shipped = by_kind(
        [
            *_yaml("serving/k8s/deployment-stable.yaml"),
            *_yaml("serving/k8s/deployment-canary.yaml"),
            *_yaml("serving/k8s/service.yaml"),
            *_yaml("deploy/k8s/serving-ingress.yaml"),
            _yaml("deploy/k8s/network-policies.yaml")[0],  # the serving pods' policy
        ]
    )
    for key, document in shipped.items():
        assert rendered[key] == document, key


def test_rendered_for_another_model_every_name_is_the_pipelines() -> None:
    deploy = load_settings().for_model("breast_cancer").deploy
    objects = by_kind(render(model="breast_cancer", name=deploy.serving_name))
    stable = objects[("Deployment", deploy.stable_deployment)]
    canary = objects[("Deployment", deploy.canary_deployment)]
    for deployment, track in ((stable, "stable"), (canary, "canary")):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["name"] == "serving"  # the release target patches this container
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["SERVING_MODEL_NAME"] == "breast_cancer"
        assert env["SERVING_TRACK"] == track
        assert env["SERVING_PREDICTION_LOG"] == "s3://mlops-predictions/breast_cancer"
    pods = stable["spec"]["template"]["metadata"]["labels"]
    (service,) = [d for (kind, _), d in objects.items() if kind == "Service"]
    assert service["spec"]["selector"].items() <= pods.items()
    (ingress,) = [d for (kind, _), d in objects.items() if kind == "Ingress"]
    backends = {
        p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert backends == {service["metadata"]["name"]}
    policies = [d for (kind, _), d in objects.items() if kind == "NetworkPolicy"]
    selected = [
        p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= pods.items()
    ]
    assert len(selected) == 1  # the serving pods' own policy
    reached = [p["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] for p in policies
               if p not in selected]  # fmt: skip
    assert reached == [{"app.kubernetes.io/name": service["metadata"]["name"]}]
    (role,) = [d for (kind, _), d in objects.items() if kind == "Role"]
    (rule,) = role["rules"]
    assert set(rule["resourceNames"]) == {deploy.stable_deployment, deploy.canary_deployment}
    assert "patch" in rule["verbs"] and not {"create", "delete", "*"} & set(rule["verbs"])


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed")
def test_helm_renders_the_same() -> None:
    values = ["--set", "model=breast_cancer,name=breast-cancer"]
    out = subprocess.run(["helm", "template", "x", str(CHART), *values], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    helm = by_kind([d for d in yaml.safe_load_all(out) if d])
    assert helm == by_kind(render(model="breast_cancer", name="breast-cancer"))
