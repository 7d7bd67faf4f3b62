"""The Kubernetes deployment target against a loopback Kubernetes API: the exact patches it sends,
the replica math, idempotency, the rollout timeout, and the patched Deployments still valid."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import load_settings
from mlops_steps.release.targets import open_target
from mlops_steps.release.targets.base import Release, TrafficState
from mlops_steps.release.targets.kubernetes import (
    IMAGE_ANNOTATION,
    VERSION_ANNOTATION,
    KubernetesTarget,
    canary_replicas,
    effective_weight,
)
from tests.fake_apis import FakeKubernetes, Recorded, strategic_merge

REPO = Path(__file__).resolve().parents[4]
KUBERNETES_VERSION = "1.33"
TOKEN = "fake-sa-token-for-tests"
STABLE, CANARY = "churn-serving-stable", "churn-serving-canary"
BASE = "/apis/apps/v1/namespaces/mlops/deployments"
V7 = Release("churn", "7", "ghcr.io/airflow-mlops/serving:v7-0123456789ab")
V3 = Release("churn", "3", "ghcr.io/airflow-mlops/serving:v3-0123456789ab")


def _manifest(name: str) -> dict[str, Any]:
    track = "stable" if name == STABLE else "canary"
    return yaml.safe_load((REPO / "serving" / "k8s" / f"deployment-{track}.yaml").read_text())


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never the real in-cluster API
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    with FakeKubernetes() as fake:
        fake.add_deployment(_manifest(STABLE))
        fake.add_deployment(_manifest(CANARY))
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", TOKEN)))
        yield fake


def _target(aliases: dict[str, str] | None = None) -> KubernetesTarget:
    target = open_target(load_settings())  # the same path the release steps take
    assert isinstance(target, KubernetesTarget)
    target.poll_interval_s = 0.01
    target.resolve_alias = (aliases if aliases is not None else {"champion": "3"}).get
    return target


def _patches(requests: list[Recorded]) -> list[tuple[str, Any]]:
    return [(r.path, r.json) for r in requests if r.method == "PATCH"]


def _expected_release_patch(release: Release, replicas: int | None) -> dict[str, Any]:
    annotations = {VERSION_ANNOTATION: release.version, IMAGE_ANNOTATION: release.image_ref}
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    spec["template"] = {
        "metadata": {"annotations": annotations},
        "spec": {
            "containers": [
                {
                    "name": "serving",
                    "image": release.image_ref,
                    "env": [{"name": "SERVING_STABLE_ALIAS", "value": release.version}],
                }
            ]
        },
    }
    return {"metadata": {"annotations": annotations}, "spec": spec}


def _valid(deployment: dict[str, Any]) -> dict[str, Any]:
    """The stored object minus what the API server adds, validated as a manifest."""
    manifest = copy.deepcopy(deployment)
    manifest.pop("status", None)
    manifest["metadata"].pop("generation", None)
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    return manifest


def _env(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["env"])


def test_replica_math_and_effective_weight() -> None:
    assert canary_replicas(0.1, 3) == 1  # 0.3 / 0.9 = 0.33 -> 1 pod -> 25 % effective
    assert effective_weight(1, 3) == 0.25
    assert canary_replicas(0.0, 3) == 0
    assert canary_replicas(0.25, 3) == 1  # exactly 1.0, not 2 through float error
    assert canary_replicas(0.5, 3) == 3
    assert canary_replicas(0.2, 10) == 3  # 2.5 -> 3 -> 23 %
    assert canary_replicas(0.01, 1) == 1  # a canary gets at least one pod
    assert effective_weight(0, 0) == 0.0
    for weight in (1.0, 1.5, -0.1):
        with pytest.raises(StepError, match="canary weight") as raised:
            canary_replicas(weight, 3)
        assert "below 1" in str(raised.value)


def test_state_reads_versions_from_the_specs_and_weight_from_ready_pods(
    cluster: FakeKubernetes,
) -> None:
    # As shipped: stable on the champion alias (resolved like a pod does), canary at 0 pods.
    assert _target().state() == TrafficState("3", None, 0.0)
    assert _target(aliases={}).state() == TrafficState(None, None, 0.0)
    requests = cluster.take()
    assert [(r.method, r.path) for r in requests][:2] == [
        ("GET", f"{BASE}/{STABLE}"),
        ("GET", f"{BASE}/{CANARY}"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in requests)
    assert not _patches(requests)


def test_start_canary_patches_only_the_canary_and_is_idempotent(cluster: FakeKubernetes) -> None:
    original = _manifest(CANARY)
    state = _target().start_canary(V7, 0.1)
    assert state == TrafficState("3", "7", 0.25)

    requests = cluster.take()
    assert _patches(requests) == [(f"{BASE}/{CANARY}", _expected_release_patch(V7, 1))]
    (patch,) = [r for r in requests if r.method == "PATCH"]
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"

    canary = cluster.deployments[CANARY]
    assert canary["metadata"]["generation"] == 2
    manifest = _valid(canary)
    assert manifest == strategic_merge(copy.deepcopy(original), _expected_release_patch(V7, 1))
    assert manifest["spec"]["replicas"] == 1
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == V7.image_ref
    # Only the model reference changed among the env entries, in place.
    expected_env = [
        {"name": "SERVING_STABLE_ALIAS", "value": "7"} if e["name"] == "SERVING_STABLE_ALIAS" else e
        for e in _env(original)
    ]
    assert _env(manifest) == expected_env
    assert cluster.deployments[STABLE]["metadata"]["generation"] == 1  # stable untouched

    # A retry sends the same patch and changes nothing.
    assert _target().start_canary(V7, 0.1) == state
    assert _patches(cluster.take()) == [(f"{BASE}/{CANARY}", _expected_release_patch(V7, 1))]
    assert cluster.deployments[CANARY]["metadata"]["generation"] == 2


def test_promote_pins_the_version_on_stable_then_retires_the_canary(
    cluster: FakeKubernetes,
) -> None:
    original = _manifest(STABLE)
    _target().start_canary(V7, 0.1)
    cluster.take()

    state = _target().promote(V7)
    assert state == TrafficState("7", None, 0.0)
    assert _patches(cluster.take()) == [
        (f"{BASE}/{STABLE}", _expected_release_patch(V7, None)),
        (f"{BASE}/{CANARY}", {"spec": {"replicas": 0}}),
    ]
    stable = _valid(cluster.deployments[STABLE])
    assert stable == strategic_merge(copy.deepcopy(original), _expected_release_patch(V7, None))
    assert stable["spec"]["replicas"] == 3  # replica count (or an autoscaler's) left alone
    assert {"name": "SERVING_STABLE_ALIAS", "value": "7"} in _env(stable)
    _valid(cluster.deployments[CANARY])
    generations = {n: d["metadata"]["generation"] for n, d in cluster.deployments.items()}

    # A retry after the promotion went through: same patches, nothing changes.
    assert _target().promote(V7) == state
    assert {n: d["metadata"]["generation"] for n, d in cluster.deployments.items()} == generations


def test_rollback_retires_the_canary_and_repins_the_stable_version(
    cluster: FakeKubernetes,
) -> None:
    _target().start_canary(V7, 0.1)
    cluster.take()

    # Stable runs the champion alias; the rollback pins the champion's version and image.
    assert _target().rollback(V3) == TrafficState("3", None, 0.0)
    assert _patches(cluster.take()) == [
        (f"{BASE}/{CANARY}", {"spec": {"replicas": 0}}),
        (f"{BASE}/{STABLE}", _expected_release_patch(V3, None)),
    ]
    _valid(cluster.deployments[STABLE])

    # Again: the stable Deployment already runs v3, so only the (no-op) canary patch is sent.
    assert _target().rollback(V3) == TrafficState("3", None, 0.0)
    assert _patches(cluster.take()) == [(f"{BASE}/{CANARY}", {"spec": {"replicas": 0}})]
    assert _target().rollback(None) == TrafficState("3", None, 0.0)
    assert _patches(cluster.take()) == [(f"{BASE}/{CANARY}", {"spec": {"replicas": 0}})]

    # A champion without a recorded image: the version is pinned, the image left as it is.
    image_before = cluster.deployments[STABLE]["spec"]["template"]["spec"]["containers"][0]["image"]
    _target().rollback(Release("churn", "2", ""))
    _, (path, body) = _patches(cluster.take())
    assert path == f"{BASE}/{STABLE}"
    assert body == {
        "metadata": {"annotations": {VERSION_ANNOTATION: "2"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {VERSION_ANNOTATION: "2"}},
                "spec": {
                    "containers": [
                        {"name": "serving", "env": [{"name": "SERVING_STABLE_ALIAS", "value": "2"}]}
                    ]
                },
            }
        },
    }
    container = cluster.deployments[STABLE]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image_before


def test_a_rollout_that_never_finishes_fails_named_and_is_undone(
    cluster: FakeKubernetes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLOPS_ROLLOUT_TIMEOUT_S", "0.2")
    cluster.stuck.add(CANARY)
    with pytest.raises(StepError) as raised, caplog.at_level(logging.INFO, "mlops_steps"):
        _target().start_canary(V7, 0.1)
    message = str(raised.value)
    assert f"deployment/{CANARY} in namespace mlops" in message
    assert "rollout failed: not finished after 0.2s (0 of 1 pods updated)" in message
    assert "MLOPS_ROLLOUT_TIMEOUT_S" in message and "kubectl -n mlops rollout status" in message

    patches = _patches(cluster.take())
    assert patches[0] == (f"{BASE}/{CANARY}", _expected_release_patch(V7, 1))
    path, restore = patches[-1]
    assert path == f"{BASE}/{CANARY}"
    assert restore["spec"]["replicas"] == 0
    assert restore["metadata"]["annotations"] == {VERSION_ANNOTATION: None, IMAGE_ANNOTATION: None}
    # Back to what the manifest had: its own annotations kept (an emptied map is fine when the
    # manifest had none).
    canary = _valid(cluster.deployments[CANARY])
    original = _manifest(CANARY)
    if not canary["metadata"].get("annotations"):
        canary["metadata"].pop("annotations", None)
    canary["spec"]["template"]["metadata"]["annotations"] = {
        k: v
        for k, v in canary["spec"]["template"]["metadata"]["annotations"].items()
        if not k.startswith("mlops.airflow.apache.org/")
    }
    assert canary == original
    assert TOKEN not in caplog.text


def test_weight_one_only_for_the_first_release(cluster: FakeKubernetes) -> None:
    with pytest.raises(StepError, match="canary weight"):
        _target().start_canary(V7, 1.0)  # a stable version serves: refuse
    assert not _patches(cluster.take())

    # No champion yet: the stable pods cannot load anything, the canary takes S pods.
    state = _target(aliases={}).start_canary(V7, 1.0)
    assert _patches(cluster.take()) == [(f"{BASE}/{CANARY}", _expected_release_patch(V7, 3))]
    assert state.canary_version == "7"


def test_errors_name_the_deployment_and_the_fix(
    cluster: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_CANARY_DEPLOYMENT", "churn-serving-missing")
    with pytest.raises(StepError) as raised:
        _target().start_canary(V7, 0.1)
    assert "deployment/churn-serving-missing in namespace mlops: does not exist (HTTP 404" in str(
        raised.value
    )
    assert "kubectl apply -f serving/k8s/" in str(raised.value)

    monkeypatch.delenv("MLOPS_CANARY_DEPLOYMENT")
    with pytest.raises(StepError, match="serves model 'churn', not 'fraud'"):
        _target().start_canary(Release("fraud", "7", V7.image_ref), 0.1)
    assert not _patches(cluster.take())


def test_no_credentials_is_a_named_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    with pytest.raises(StepError) as raised:
        open_target(load_settings())
    assert raised.value.subject == "KUBECONFIG"
    assert "mlops-steps ServiceAccount" in str(raised.value)


def _pod(ip: str, ready: bool) -> dict[str, Any]:
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": {"name": f"pod-{ip}"}, "status": {"podIP": ip, "conditions": [condition]}}


def test_metrics_urls_list_every_ready_serving_pod_of_both_tracks(
    cluster: FakeKubernetes,
) -> None:
    cluster.pods = {
        "app.kubernetes.io/name=churn-serving,track=stable": [
            _pod("10.0.0.1", True),
            _pod("10.0.0.2", True),
            _pod("10.0.0.3", False),  # not ready: the Service sends it nothing
        ],
        "app.kubernetes.io/name=churn-serving,track=canary": [_pod("10.0.1.1", True)],
    }
    assert _target().metrics_urls() == [
        "http://10.0.0.1:8000/metrics",
        "http://10.0.0.2:8000/metrics",
        "http://10.0.1.1:8000/metrics",
    ]
    listed = [r for r in cluster.take() if r.path == "/api/v1/namespaces/mlops/pods"]
    assert [r.query["labelSelector"] for r in listed] == [
        ["app.kubernetes.io/name=churn-serving,track=stable"],
        ["app.kubernetes.io/name=churn-serving,track=canary"],
    ]
