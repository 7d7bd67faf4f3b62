"""The remote image builders against loopback stand-ins: the GitHub Actions workflow dispatch
(``ci``) and a Kubernetes Job running kaniko (``kaniko``). The tests assert the exact requests."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings, load_settings
from mlops_steps.release.builders import kaniko
from mlops_steps.release.builders.base import image_ref, image_tag
from mlops_steps.release.builders.kaniko import (
    KanikoBuilder,
    kaniko_job_manifest,
    kaniko_job_name,
    pinned_context,
)
from tests.fake_apis import FakeGitHub, FakeKubernetes
from tests.steps.release.builders.helpers import CI_TOKEN, SHA, build_request, ci_build

KUBERNETES_VERSION = "1.33"
JOBS = "/apis/batch/v1/namespaces/mlops/jobs"


def test_image_reference_and_tag() -> None:
    settings = load_settings()
    assert image_tag("7", SHA) == "v7-0123456789ab"
    assert image_ref(settings, "7", SHA) == "ghcr.io/airflow-mlops/serving:v7-0123456789ab"
    assert image_tag("7", f"{SHA}-dirty") == "v7-0123456789ab-dirty"
    assert image_tag("7", "unknown") == "v7-unknown"
    assert image_tag("7", "a/b c+d") == "v7-a-b-c-d"
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", image_tag("12", "x" * 300))


# -- ci ----------------------------------------------------------------------------------------


def test_ci_dispatches_once_then_follows_its_run_to_success(
    github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        url = ci_build(load_settings())
    requests = github.take()
    listing, dispatch, *rest = requests
    # First: is a build of this tag already running? (none)
    assert (listing.method, listing.path) == ("GET", f"{github.workflow_path}/runs")
    assert listing.query["event"] == ["workflow_dispatch"]
    assert re.fullmatch(r">=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listing.query["created"][0])

    assert (dispatch.method, dispatch.path) == ("POST", f"{github.workflow_path}/dispatches")
    assert dispatch.headers["authorization"] == f"Bearer {CI_TOKEN}"
    assert dispatch.headers["accept"] == "application/vnd.github+json"
    assert dispatch.headers["x-github-api-version"] == "2022-11-28"
    assert dispatch.headers["content-type"] == "application/json"
    body = dispatch.json
    request_id = body["inputs"]["request_id"]
    assert re.fullmatch(r"v7-0123456789ab-[0-9a-f]{8}", request_id)
    assert body == {
        "ref": "main",
        "inputs": {
            "model_name": "churn",
            "model_version": "7",
            "code_sha": SHA,
            "image_tag": "v7-0123456789ab",
            "request_id": request_id,
        },
    }
    # Then: the run list until the run named with the request id shows up, then that run.
    calls = [(r.method, r.path) for r in rest]
    runs = f"{github.workflow_path}/runs"
    run_path = f"/repos/{github.owner_repo}/actions/runs/1000"
    assert calls == [("GET", runs), ("GET", runs), ("GET", run_path), ("GET", run_path)]
    assert url == f"{github.url}/{github.owner_repo}/actions/runs/1000"
    assert all(r.headers["authorization"] == f"Bearer {CI_TOKEN}" for r in requests)
    assert CI_TOKEN not in caplog.text


def test_ci_failure_and_timeout_name_the_run(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    github.conclusion = "failure"
    with pytest.raises(StepError) as raised:
        ci_build(load_settings())
    run_url = f"{github.url}/{github.owner_repo}/actions/runs/1000"
    assert str(raised.value).startswith(f"{run_url}: the CI build ended with conclusion 'failure'")

    github.never_completes = True
    monkeypatch.setenv("MLOPS_CI_TIMEOUT_S", "0.3")
    with pytest.raises(StepError) as raised:
        ci_build(load_settings(), version="8")
    assert "did not finish within 0.3s (status queued)" in str(raised.value)
    assert "/actions/runs/1001" in str(raised.value)


def test_ci_waits_on_a_running_build_of_the_same_tag(github: FakeGitHub) -> None:
    github.add_run("build-serving v7-0123456789ab v7-0123456789ab-aaaaaaaa", "in_progress", None)
    github.add_run("build-serving v77-0123456789ab v77-0123456789ab-bbbbbbbb", "queued", None)
    github.add_run("build-serving v7-0123456789ab v7-0123456789ab-cccccccc", "completed", "failure")
    url = ci_build(load_settings())
    requests = github.take()
    assert not [r for r in requests if r.method == "POST"]
    assert url.endswith("/actions/runs/1000")


def test_ci_retries_server_errors_and_refuses_bad_tokens(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    github.fail_next = [502, 503]
    assert ci_build(load_settings()).endswith("/runs/1000")
    statuses = github.take()
    assert [(r.method, r.path) for r in statuses[:3]] == [
        ("GET", f"{github.workflow_path}/runs")
    ] * 3

    github.fail_next = [401]
    with pytest.raises(StepError) as raised:
        ci_build(load_settings(), version="9")
    assert raised.value.subject == "MLOPS_CI_TOKEN"
    assert "HTTP 401" in str(raised.value) and CI_TOKEN not in str(raised.value)

    github.fail_next = [500] * 4
    with pytest.raises(RuntimeError, match="failed 4 times: HTTP 500"):  # a crash: Airflow retries
        ci_build(load_settings(), version="9")


def test_ci_needs_its_token_and_url(github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_CI_TOKEN")
    with pytest.raises(StepError) as raised:
        ci_build(load_settings())
    assert raised.value.subject == "MLOPS_CI_TOKEN"
    assert "is not set" in str(raised.value)
    monkeypatch.setenv("MLOPS_CI_TOKEN", CI_TOKEN)
    monkeypatch.setenv("MLOPS_CI_DISPATCH_URL", f"{github.url}/repos/o/r/actions/workflows")
    with pytest.raises(StepError, match="MLOPS_CI_DISPATCH_URL: is not a workflow dispatch URL"):
        ci_build(load_settings())
    monkeypatch.delenv("MLOPS_CI_DISPATCH_URL")
    with pytest.raises(StepError, match="MLOPS_CI_DISPATCH_URL: is not set"):
        ci_build(load_settings())
    assert not github.take()


# -- kaniko ----------------------------------------------------------------------------------------


def _manifest(settings: Settings, version: str = "7") -> dict[str, Any]:
    ref = image_ref(settings, version, SHA)
    return kaniko_job_manifest(settings, model_name="churn", version=version, code_sha=SHA, ref=ref)


def test_kaniko_job_manifest_is_a_valid_pinned_build() -> None:
    settings = load_settings()
    job = _manifest(settings)
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)

    name = job["metadata"]["name"]
    assert name == kaniko_job_name("ghcr.io/airflow-mlops/serving:v7-0123456789ab")
    assert re.fullmatch(r"build-serving-v7-0123456789ab-[0-9a-f]{8}", name)
    assert job["metadata"]["namespace"] == "mlops"
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["ttlSecondsAfterFinished"] == 86_400
    assert spec["activeDeadlineSeconds"] == 1800
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["image"] == "gcr.io/kaniko-project/executor:v1.23.2"
    assert container["args"][:6] == [
        "--context=git://github.com/airflow-mlops/airflow-mlops.git#refs/heads/main#" + SHA,
        "--dockerfile=serving/Dockerfile",
        "--destination=ghcr.io/airflow-mlops/serving:v7-0123456789ab",
        "--build-arg=MLOPS_MODEL_NAME=churn",
        "--build-arg=MLOPS_MODEL_VERSION=7",
        f"--build-arg=MLOPS_CODE_SHA={SHA}",
    ]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
    assert container["volumeMounts"] == [
        {"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": True}
    ]
    assert pod["volumes"][0]["secret"] == {
        "secretName": "mlops-registry-push",
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    long_ref = "registry.example.com/team/serving:" + "v123456-" + "a" * 100
    assert len(kaniko_job_name(long_ref)) <= 63
    assert pinned_context("s3://bucket/context.tar.gz", SHA) == ("s3://bucket/context.tar.gz")


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetes]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kaniko, "KANIKO_POLL_S", 0.01)
    with FakeKubernetes() as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig", "sa-token")))
        yield fake


def _kaniko_build(settings: Settings, version: str = "7") -> str:
    url = KanikoBuilder(settings).build(build_request(settings, version)).build_url
    assert url is not None
    return url


def test_kaniko_creates_the_job_and_waits_for_it(cluster: FakeKubernetes) -> None:
    settings = load_settings()
    job = _manifest(settings)
    name = job["metadata"]["name"]
    url = _kaniko_build(settings)
    assert url == f"kubernetes:///apis/batch/v1/namespaces/mlops/jobs/{name}"
    create, *polls = cluster.take()
    assert (create.method, create.path) == ("POST", JOBS)
    assert create.json == job
    assert create.headers["authorization"] == "Bearer sa-token"
    assert [(r.method, r.path) for r in polls] == [("GET", f"{JOBS}/{name}/status")] * 2


def test_kaniko_attaches_to_a_running_job_of_the_same_image(cluster: FakeKubernetes) -> None:
    settings = load_settings()
    job = _manifest(settings)
    name = job["metadata"]["name"]
    cluster.set_job(name, job, {"succeeded": 1})
    _kaniko_build(settings)
    calls = [(r.method, r.path) for r in cluster.take()]
    assert calls == [
        ("POST", JOBS),
        ("GET", f"{JOBS}/{name}/status"),
        ("GET", f"{JOBS}/{name}/status"),
    ]

    # A Job of the same name building something else is not ours to wait on.
    cluster.set_job(name, {**job, "metadata": {**job["metadata"], "annotations": {}}}, {})
    with pytest.raises(StepError, match="exists but builds another image"):
        _kaniko_build(settings)


def test_kaniko_rebuilds_after_a_failed_job(cluster: FakeKubernetes) -> None:
    settings = load_settings()
    job = _manifest(settings)
    name = job["metadata"]["name"]
    failed = {
        "failed": 2,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    }
    cluster.set_job(name, job, failed)
    _kaniko_build(settings)
    calls = [(r.method, r.path) for r in cluster.take()]
    assert calls[:4] == [
        ("POST", JOBS),
        ("GET", f"{JOBS}/{name}/status"),
        ("DELETE", f"{JOBS}/{name}"),
        ("POST", JOBS),
    ]


def test_kaniko_failure_names_the_job_and_logs_the_build_output(
    cluster: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.job_script = [
        {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ],
        }
    ]
    settings = load_settings()
    name = _manifest(settings)["metadata"]["name"]
    with pytest.raises(StepError) as raised, caplog.at_level(logging.WARNING, "mlops_steps"):
        _kaniko_build(settings)
    message = str(raised.value)
    assert message.startswith(f"job/{name} in namespace mlops: the kaniko build failed: ")
    assert "BackoffLimitExceeded" in message
    assert f"kubectl -n mlops logs job/{name}" in message
    requests = cluster.take()
    pods = next(r for r in requests if r.path == "/api/v1/namespaces/mlops/pods")
    assert pods.query["labelSelector"] == [f"job-name={name}"]
    assert "push denied" in caplog.text
