"""The serving chart (deploy/helm/mlops-serving): one model's Deployments, Service, Ingress,
NetworkPolicies and Role, rendered per model with the model's name as a value.

Its templates only substitute values (``{{ .Values.x }}``) and render a block or not on one
value (``# {{- if eq|ne .Values.x "v" }}`` ... ``# {{- end }}``, written as YAML comments so the
templates stay plain YAML for the policy scan), checked below, so the test renders them exactly as
``helm template`` would and validates every rendered object against the Kubernetes schema, or,
for the HTTPRoute and the Rollout, against their CRDs' schemas (tests/fixtures/crds). Rendered
for churn, the chart is the manifests of serving/k8s and deploy/k8s
(which the release target and the scan read); rendered for another model, every name is the one
the pipeline's settings derive for it."""

from __future__ import annotations

import functools
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


CONDITION = re.compile(r'^\s*# \{\{- if (eq|ne) \.Values\.(\w+) "([\w-]+)" \}\}$')
END = re.compile(r"^\s*# \{\{- end \}\}$")
CRDS = REPO / "tests" / "fixtures" / "crds"
CRD_SCHEMAS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): CRDS / "httproute-v1.yaml",
    ("argoproj.io/v1alpha1", "Rollout"): CRDS / "rollout-v1alpha1.yaml",
}
MODES = ["replicas", "gateway-api", "argo-rollouts"]


def _conditions(text: str, values: dict[str, Any]) -> str:
    """The lines of a template helm keeps: those outside a false ``if`` block (no nesting)."""
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        if match := CONDITION.match(line):
            op, name, value = match.groups()
            keep = (values[name] == value) == (op == "eq")
        elif END.match(line):
            keep = True
        elif keep:
            kept.append(line)
    return "".join(kept)


def render(**values: str) -> list[dict[str, Any]]:
    """The chart's objects for ``values`` over values.yaml, checked against its schema."""
    merged = {**DEFAULTS, **values}
    jsonschema.validate(merged, SCHEMA)
    documents = []
    for template in TEMPLATES:
        text = _conditions(template.read_text(), merged)
        text = VALUE.sub(lambda m: str(merged[m.group(1)]), text)
        documents += [d for d in yaml.safe_load_all(text) if d]
    return documents


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The vendored openAPIV3Schema of a CRD, for ``jsonschema``."""
    fixture = yaml.safe_load(CRD_SCHEMAS[(api_version, kind)].read_text())
    assert fixture["resource"] == {"apiVersion": api_version, "kind": kind}
    schema: dict[str, Any] = fixture["openAPIV3Schema"]
    return schema


def validate(document: dict[str, Any]) -> None:
    """Against the Kubernetes schema, or the vendored CRD schema of a custom resource."""
    key = (document["apiVersion"], document["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(document, crd_schema(*key))
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


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
        ifs = [line for line in text.splitlines() if CONDITION.match(line)]
        ends = [line for line in text.splitlines() if END.match(line)]
        assert len(ifs) == len(ends), template.name
        assert {CONDITION.match(line).group(2) for line in ifs} <= declared  # type: ignore[union-attr]
        plain = "".join(
            line for line in text.splitlines(keepends=True) if not CONDITION.match(line)
            and not END.match(line)
        )  # fmt: skip
        assert VALUE.sub("", plain).count("{{") == 0, template.name
        assert set(VALUE.findall(text)) <= declared, template.name
        for line in text.splitlines():
            if "{{" in line and not line.lstrip().startswith("#"):
                assert '"' in line.split(":", 1)[-1], (template.name, line)
        yaml.safe_load_all(text)  # plain YAML as it stands


KINDS = {
    "replicas": {"Deployment", "Service", "Ingress", "NetworkPolicy", "Role", "RoleBinding"},
    "gateway-api": {"Deployment", "Service", "HTTPRoute", "NetworkPolicy", "Role", "RoleBinding"},
    "argo-rollouts": {"Rollout", "Service", "Ingress", "NetworkPolicy", "Role", "RoleBinding"},
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", ["churn", "breast_cancer"])
def test_rendered_objects_validate_against_the_kubernetes_schema(model: str, mode: str) -> None:
    documents = render(model=model, name=model.replace("_", "-"), trafficMode=mode)
    assert {d["kind"] for d in documents} == KINDS[mode]
    for document in documents:
        validate(document)


def test_values_the_schema_refuses() -> None:
    for bad in ({"name": "Breast_Cancer"}, {"name": "x" * 41}, {"model": ""}, {"extra": "1"},
                {"mlflowTrackingUri": "mlflow:5000"}, {"trafficMode": "istio"},
                {"gatewayNamespace": "Gateway_System"}):  # fmt: skip
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


def test_gateway_api_mode_routes_by_weights_to_a_service_per_track() -> None:
    deploy = load_settings().for_model("breast_cancer").deploy
    objects = by_kind(render(model="breast_cancer", name=deploy.serving_name,
                             trafficMode="gateway-api"))  # fmt: skip
    route = objects[("HTTPRoute", deploy.http_route)]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"name": deploy.stable_deployment, "port": 80, "weight": 100},
        {"name": deploy.canary_deployment, "port": 80, "weight": 0},
    ]  # the release target finds the Services by the Deployments' names
    assert [m["path"]["value"] for m in rule["matches"]] == ["/predict", "/predict/batch"]
    assert route["spec"]["parentRefs"] == [{"name": "mlops-gateway", "namespace": "gateway-system"}]
    for name, track in ((deploy.stable_deployment, "stable"), (deploy.canary_deployment, "canary")):
        pods = objects[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert objects[("Service", name)]["spec"]["selector"].items() <= pods.items()
        assert pods["track"] == track
    assert not [k for k in objects if k[0] == "Ingress"]  # nothing bypasses the weights
    (role,) = [d for (kind, _), d in objects.items() if kind == "Role"]
    route_rule = {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
                  "resourceNames": [deploy.http_route], "verbs": ["get", "patch"]}  # fmt: skip
    assert route_rule in role["rules"]
    with pytest.raises(jsonschema.ValidationError):  # the CRD schema does check
        rule["backendRefs"][1]["weight"] = -1
        validate(route)


def test_argo_rollouts_mode_runs_the_deployments_pods_in_one_rollout() -> None:
    deploy = load_settings().for_model("breast_cancer").deploy
    objects = by_kind(render(model="breast_cancer", name=deploy.serving_name,
                             trafficMode="argo-rollouts"))  # fmt: skip
    rollout = objects[("Rollout", deploy.rollout)]
    assert not [k for k in objects if k[0] == "Deployment"]
    stable = by_kind(render(model="breast_cancer", name=deploy.serving_name))[
        ("Deployment", deploy.stable_deployment)
    ]
    template, expected = rollout["spec"]["template"], stable["spec"]["template"]
    del expected["metadata"]["labels"]["track"]  # the Rollout's canary/stableMetadata set it
    (container,) = template["spec"]["containers"]
    (expected_container,) = expected["spec"]["containers"]
    track = next(e for e in container["env"] if e["name"] == "SERVING_TRACK")
    from_label = {"fieldRef": {"fieldPath": "metadata.labels['track']"}}
    assert track == {"name": "SERVING_TRACK", "valueFrom": from_label}
    container["env"].remove(track)
    expected_container["env"].remove({"name": "SERVING_TRACK", "value": "stable"})
    assert template == expected
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["canaryMetadata"] == {"labels": {"track": "canary"}}
    assert canary["stableMetadata"] == {"labels": {"track": "stable"}}
    (service,) = [d for (kind, _), d in objects.items() if kind == "Service"]
    assert service["spec"]["selector"] == rollout["spec"]["selector"]["matchLabels"]
    (role,) = [d for (kind, _), d in objects.items() if kind == "Role"]
    rollout_rule = {"apiGroups": ["argoproj.io"], "resources": ["rollouts", "rollouts/status"],
                    "resourceNames": [deploy.rollout], "verbs": ["get", "patch"]}  # fmt: skip
    assert rollout_rule in role["rules"]
    with pytest.raises(jsonschema.ValidationError):
        canary["steps"] = [{"setWeight": "5%"}]
        validate(rollout)
