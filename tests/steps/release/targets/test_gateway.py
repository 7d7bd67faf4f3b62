"""The gateway-api traffic mode against a loopback Kubernetes API holding what the chart renders
(trafficMode gateway-api): the exact HTTPRoute weights per traffic step, the mirror filter of
shadow mode, promote and rollback end states, idempotency, and traffic left as it was on failure.
Every route the fake stores is checked against the vendored HTTPRoute CRD schema (v1.3.0)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import load_settings
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import Release, TrafficState
from mlops_steps.release.targets.gateway import GatewayTarget, weight_percent
from tests.deploy.test_helm_chart import by_kind, render, validate
from tests.fake_apis import Recorded
from tests.steps.release.targets.fake_traffic import FakeTrafficCluster

TOKEN = "fake-sa-token-for-tests"
STABLE, CANARY, ROUTE = "churn-serving-stable", "churn-serving-canary", "churn-serving"
DEPLOYMENTS = "/apis/apps/v1/namespaces/mlops/deployments"
ROUTE_PATH = f"/apis/gateway.networking.k8s.io/v1/namespaces/mlops/httproutes/{ROUTE}"
V7 = Release("churn", "7", "ghcr.io/airflow-mlops/serving:v7-0123456789ab")
V3 = Release("churn", "3", "ghcr.io/airflow-mlops/serving:v3-0123456789ab")
CHART = by_kind(render(trafficMode="gateway-api"))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTrafficCluster]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    monkeypatch.setenv("MLOPS_K8S_TRAFFIC", "gateway-api")
    with FakeTrafficCluster() as fake:
        fake.add_deployment(CHART[("Deployment", STABLE)])
        fake.add_deployment(CHART[("Deployment", CANARY)])
        fake.add_route(CHART[("HTTPRoute", ROUTE)])
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", TOKEN)))
        yield fake


def _target() -> GatewayTarget:
    target = open_target(load_settings())  # the path the release steps take
    assert isinstance(target, GatewayTarget)
    target.deployments.poll_interval_s = 0.01
    target.deployments.resolve_alias = {"champion": "3"}.get
    return target


def _patches(requests: list[Recorded]) -> list[tuple[str, Any]]:
    return [(r.path, r.json) for r in requests if r.method == "PATCH"]


def _rules(stable: int, canary: int, mirror: int = 0) -> dict[str, Any]:
    """The chart's rule with these weights (and a mirror filter when ``mirror``)."""
    (rule,) = copy.deepcopy(CHART[("HTTPRoute", ROUTE)]["spec"]["rules"])
    rule["backendRefs"][0]["weight"], rule["backendRefs"][1]["weight"] = stable, canary
    if mirror:
        mirrored = {"backendRef": {"name": CANARY, "port": 80}, "percent": mirror}
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirrored}]
    return {"spec": {"rules": [rule]}}


def _canary_patch(replicas: int) -> dict[str, Any]:
    from tests.steps.release.targets.test_kubernetes import _expected_release_patch

    return _expected_release_patch(V7, replicas)


def test_weights_are_whole_percents_never_zero_or_all_for_a_share_in_between() -> None:
    assert [weight_percent(w) for w in (0.0, 0.05, 0.333, 0.004, 0.996, 0.5)] == [
        0, 5, 33, 1, 99, 50,
    ]  # fmt: skip
    assert weight_percent(1.0, allow_all=True) == 100
    for weight in (1.0, 1.2, -0.1):
        with pytest.raises(StepError, match="canary weight"):
            weight_percent(weight)


def test_traffic_steps_set_exactly_these_route_weights(cluster: FakeTrafficCluster) -> None:
    expected = {0.05: (1, 95, 5), 0.25: (1, 75, 25), 0.5: (2, 50, 50)}  # pods, stable, canary
    for weight, (pods, stable, canary) in expected.items():
        state = _target().start_canary(V7, weight)
        assert state == TrafficState("3", "7", canary / 100)
        requests = cluster.take()
        assert _patches(requests) == [
            (f"{DEPLOYMENTS}/{CANARY}", _canary_patch(pods)),
            (ROUTE_PATH, _rules(stable, canary)),
        ]
        (route_patch,) = [r for r in requests if r.method == "PATCH" and r.path == ROUTE_PATH]
        assert route_patch.headers["content-type"] == "application/merge-patch+json"
        assert route_patch.headers["authorization"] == f"Bearer {TOKEN}"
        validate(_manifest(cluster.routes[ROUTE]))
    assert cluster.routes[ROUTE]["metadata"]["generation"] == 4
    assert cluster.deployments[STABLE]["metadata"]["generation"] == 1  # stable untouched

    # Re-sent: the same patches, and neither the route nor the canary changes.
    generations = (cluster.routes[ROUTE]["metadata"]["generation"],
                   cluster.deployments[CANARY]["metadata"]["generation"])  # fmt: skip
    assert _target().start_canary(V7, 0.5) == TrafficState("3", "7", 0.5)
    assert _patches(cluster.take()) == [
        (f"{DEPLOYMENTS}/{CANARY}", _canary_patch(2)),
        (ROUTE_PATH, _rules(50, 50)),
    ]
    assert generations == (cluster.routes[ROUTE]["metadata"]["generation"],
                           cluster.deployments[CANARY]["metadata"]["generation"])  # fmt: skip


def _manifest(obj: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(obj)
    manifest.pop("status", None)
    manifest["metadata"].pop("generation", None)
    return manifest


def test_shadow_mirrors_the_share_and_a_canary_step_removes_the_mirror(
    cluster: FakeTrafficCluster,
) -> None:
    state = _target().start_shadow(V7, 0.1)
    assert state == TrafficState("3", "7", 0.0, shadow_share=0.1)
    assert _patches(cluster.take()) == [
        (f"{DEPLOYMENTS}/{CANARY}", _canary_patch(1)),
        (ROUTE_PATH, _rules(100, 0, mirror=10)),
    ]
    validate(_manifest(cluster.routes[ROUTE]))

    assert _target().start_canary(V7, 0.05) == TrafficState("3", "7", 0.05)
    assert _patches(cluster.take())[-1] == (ROUTE_PATH, _rules(95, 5))
    assert "filters" not in cluster.routes[ROUTE]["spec"]["rules"][0]

    with pytest.raises(StepError, match="shadow share"):
        _target().start_shadow(V7, 0.0)


def test_promote_pins_stable_routes_all_to_it_and_retires_the_canary(
    cluster: FakeTrafficCluster,
) -> None:
    _target().start_canary(V7, 0.25)
    cluster.take()
    state = _target().promote(V7)
    assert state == TrafficState("7", None, 0.0)
    from tests.steps.release.targets.test_kubernetes import _expected_release_patch

    assert _patches(cluster.take()) == [
        (f"{DEPLOYMENTS}/{STABLE}", _expected_release_patch(V7, None)),
        (ROUTE_PATH, _rules(100, 0)),
        (f"{DEPLOYMENTS}/{CANARY}", {"spec": {"replicas": 0}}),
    ]
    assert _manifest(cluster.routes[ROUTE])["spec"] == CHART[("HTTPRoute", ROUTE)]["spec"]
    assert _target().promote(V7) == state  # again: nothing changes
    assert cluster.routes[ROUTE]["metadata"]["generation"] == 3


def test_rollback_routes_all_to_stable_removes_the_mirror_and_repins(
    cluster: FakeTrafficCluster,
) -> None:
    _target().start_shadow(V7, 0.2)
    cluster.take()
    assert _target().rollback(V3) == TrafficState("3", None, 0.0)
    from tests.steps.release.targets.test_kubernetes import _expected_release_patch

    assert _patches(cluster.take()) == [
        (ROUTE_PATH, _rules(100, 0)),  # the candidate's traffic goes first
        (f"{DEPLOYMENTS}/{CANARY}", {"spec": {"replicas": 0}}),
        (f"{DEPLOYMENTS}/{STABLE}", _expected_release_patch(V3, None)),
    ]
    assert _manifest(cluster.routes[ROUTE])["spec"] == CHART[("HTTPRoute", ROUTE)]["spec"]


def test_a_failed_route_patch_leaves_the_traffic_as_it_was(cluster: FakeTrafficCluster) -> None:
    _target().start_canary(V7, 0.05)
    before = copy.deepcopy(cluster.routes[ROUTE])
    cluster.take()
    cluster.fail_route_patches = 1
    with pytest.raises(RuntimeError, match="Kubernetes API unavailable on patch"):
        _target().start_canary(V7, 0.25)
    assert cluster.routes[ROUTE] == before
    assert _target().state() == TrafficState("3", "7", 0.05)


def test_a_route_no_gateway_programs_is_patched_back_and_named(
    cluster: FakeTrafficCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ROLLOUT_TIMEOUT_S", "0.2")
    cluster.gateways_accept = False
    with pytest.raises(StepError) as raised:
        _target().start_canary(V7, 0.05)
    message = str(raised.value)
    assert f"httproutes.gateway.networking.k8s.io/{ROUTE} in namespace mlops" in message
    assert "route not programmed after 0.2s" in message
    assert f"kubectl -n mlops describe httproute {ROUTE}" in message
    route_patches = [body for path, body in _patches(cluster.take()) if path == ROUTE_PATH]
    assert route_patches == [_rules(95, 5), _rules(100, 0)]  # the step, then the way back
    assert _manifest(cluster.routes[ROUTE])["spec"] == CHART[("HTTPRoute", ROUTE)]["spec"]


def test_a_missing_route_names_its_setting(
    cluster: FakeTrafficCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_HTTP_ROUTE", "churn-missing")
    with pytest.raises(StepError) as raised:
        _target().state()
    assert "does not exist (HTTP 404" in str(raised.value)
    assert "MLOPS_HTTP_ROUTE" in str(raised.value)
