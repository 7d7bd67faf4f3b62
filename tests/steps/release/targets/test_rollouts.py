"""The argo-rollouts traffic mode against a loopback Kubernetes API holding the chart's Rollout
(trafficMode argo-rollouts) and a stand-in for its controller: the exact setWeight patches per
traffic step, promote --full and abort through the status, idempotency, a stuck step undone, and
shadow refused by name. Every Rollout the fake stores is checked against the vendored CRD schema
(Argo Rollouts v1.9.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import load_settings
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import Release, TrafficState
from mlops_steps.release.targets.rollouts import RolloutTarget, template_patch
from tests.deploy.test_helm_chart import by_kind, render
from tests.fake_apis import Recorded
from tests.steps.release.targets.fake_traffic import FakeTrafficCluster

TOKEN = "fake-sa-token-for-tests"
NAME = "churn-serving"
PATH = f"/apis/argoproj.io/v1alpha1/namespaces/mlops/rollouts/{NAME}"
V7 = Release("churn", "7", "ghcr.io/airflow-mlops/serving:v7-0123456789ab")
V3 = Release("churn", "3", "ghcr.io/airflow-mlops/serving:v3-0123456789ab")
ROLLOUT = by_kind(render(trafficMode="argo-rollouts"))[("Rollout", NAME)]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTrafficCluster]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    monkeypatch.setenv("MLOPS_K8S_TRAFFIC", "argo-rollouts")
    with FakeTrafficCluster() as fake:
        fake.add_rollout(ROLLOUT)
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", TOKEN)))
        yield fake


def _target() -> RolloutTarget:
    target = open_target(load_settings())
    assert isinstance(target, RolloutTarget)
    target.poll_interval_s = 0.01
    target.resolve_alias = {"champion": "3"}.get
    return target


def _patches(requests: list[Recorded]) -> list[tuple[str, Any]]:
    return [(r.path, r.json) for r in requests if r.method == "PATCH"]


def _steps(percent: int) -> dict[str, Any]:
    return {"spec": {"strategy": {"canary": {"steps": [{"setWeight": percent}, {"pause": {}}]}}}}


def test_traffic_steps_send_exactly_these_set_weight_patches(cluster: FakeTrafficCluster) -> None:
    assert _target().state() == TrafficState("3", None, 0.0)
    cluster.take()

    first = _target().start_canary(V7, 0.05)
    assert first == TrafficState("3", "7", 1 / 3)  # no traffic router: 1 of 3 pods
    patch = template_patch(ROLLOUT, V7)
    patch["spec"].update(_steps(5)["spec"])
    requests = cluster.take()
    assert _patches(requests) == [(PATH, patch)]
    (sent,) = [r for r in requests if r.method == "PATCH"]
    assert sent.headers["content-type"] == "application/merge-patch+json"
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    (container,) = cluster.rollouts[NAME]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == V7.image_ref
    assert {"name": "SERVING_STABLE_ALIAS", "value": "7"} in container["env"]
    assert len(container["env"]) == len(ROLLOUT["spec"]["template"]["spec"]["containers"][0]["env"])

    for percent in (25, 50):
        state = _target().start_canary(V7, percent / 100)
        assert _patches(cluster.take()) == [(PATH, _steps(percent))]
        assert state.canary_version == "7" and state.stable_version == "3"
    assert cluster.rollouts[NAME]["status"]["currentStepIndex"] == 1  # paused at our step
    generation = cluster.rollouts[NAME]["metadata"]["generation"]
    assert generation == 4

    # Re-sent: the same patch, nothing changes.
    assert _target().start_canary(V7, 0.5) == state
    assert _patches(cluster.take()) == [(PATH, _steps(50))]
    assert cluster.rollouts[NAME]["metadata"]["generation"] == generation


def test_state_reads_a_traffic_routers_weight(cluster: FakeTrafficCluster) -> None:
    _target().start_canary(V7, 0.25)
    cluster.rollouts[NAME]["status"]["canary"] = {
        "weights": {"canary": {"weight": 25, "podTemplateHash": "x"},
                    "stable": {"weight": 75, "podTemplateHash": "y"}}
    }  # fmt: skip
    assert _target().state() == TrafficState("3", "7", 0.25)


def test_promote_is_a_full_promotion_through_the_status(cluster: FakeTrafficCluster) -> None:
    _target().start_canary(V7, 0.25)
    cluster.take()
    state = _target().promote(V7)
    assert state == TrafficState("7", None, 0.0)
    assert _patches(cluster.take()) == [(f"{PATH}/status", {"status": {"promoteFull": True}})]
    status = cluster.rollouts[NAME]["status"]
    assert status["stableRS"] == status["currentPodHash"] and status["phase"] == "Healthy"
    assert _target().promote(V7) == state  # again: already stable, nothing sent
    assert not _patches(cluster.take())


def test_rollback_aborts_then_puts_the_stable_template_back(cluster: FakeTrafficCluster) -> None:
    stable_hash = cluster.rollouts[NAME]["status"]["stableRS"]
    _target().start_canary(V7, 0.25)
    cluster.take()
    assert _target().rollback(None) == TrafficState("3", None, 0.0)
    (abort, undo) = _patches(cluster.take())
    assert abort == (f"{PATH}/status", {"status": {"abort": True}})
    assert undo[0] == PATH
    assert (
        undo[1]["spec"]["template"]["spec"]["containers"]
        == (ROLLOUT["spec"]["template"]["spec"]["containers"])
    )
    status = cluster.rollouts[NAME]["status"]
    assert status["stableRS"] == status["currentPodHash"] == stable_hash  # Argo skips the steps
    assert _target().rollback(None) == TrafficState("3", None, 0.0)
    assert not _patches(cluster.take())

    # A stable release other than what the stable ReplicaSet runs: pinned, then promoted.
    _target().start_canary(V7, 0.05)
    cluster.take()
    assert _target().rollback(V3) == TrafficState("3", None, 0.0)
    assert [p for p, _ in _patches(cluster.take())] == [f"{PATH}/status", PATH, f"{PATH}/status"]
    (container,) = cluster.rollouts[NAME]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == V3.image_ref


def test_a_step_the_canary_never_reaches_is_undone(
    cluster: FakeTrafficCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ROLLOUT_TIMEOUT_S", "0.2")
    before = cluster.rollouts[NAME]["status"]["stableRS"]
    cluster.canary_pods_start = False
    with pytest.raises(StepError) as raised:
        _target().start_canary(V7, 0.05)
    message = str(raised.value)
    assert f"rollouts.argoproj.io/{NAME} in namespace mlops" in message
    assert "canary step to 5% failed: not done after 0.2s" in message
    assert f"kubectl argo rollouts -n mlops get rollout {NAME}" in message
    _, restore = _patches(cluster.take())[-1]
    assert (
        restore["spec"]["template"]["spec"]["containers"]
        == (ROLLOUT["spec"]["template"]["spec"]["containers"])
    )
    assert restore["spec"]["strategy"]["canary"]["steps"] == [{"setWeight": 0}, {"pause": {}}]
    assert cluster.rollouts[NAME]["status"]["currentPodHash"] == before  # back on stable
    assert _target().state() == TrafficState("3", None, 0.0)


def test_shadow_is_refused_naming_the_mode_that_mirrors(cluster: FakeTrafficCluster) -> None:
    with pytest.raises(StepError) as raised:
        _target().start_shadow(V7, 0.1)
    assert raised.value.subject == "shadow mode on the kubernetes target (argo-rollouts)"
    assert "MLOPS_K8S_TRAFFIC=gateway-api" in str(raised.value)
    assert not cluster.take()


def test_metrics_urls_are_the_rollouts_ready_pods(cluster: FakeTrafficCluster) -> None:
    ready = {"type": "Ready", "status": "True"}
    cluster.pods = {"app.kubernetes.io/name=churn-serving": [
        {"metadata": {"name": "a"}, "status": {"podIP": "10.0.0.1", "conditions": [ready]}},
        {"metadata": {"name": "b"}, "status": {"podIP": "10.0.0.2", "conditions": []}},
    ]}  # fmt: skip
    assert _target().metrics_urls() == ["http://10.0.0.1:8000/metrics"]
