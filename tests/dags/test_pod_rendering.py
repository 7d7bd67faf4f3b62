"""Kubernetes mode, proved without a cluster: every task of every DAG renders to a pod manifest that
validates against the Kubernetes schema, and the local runner runs the identical argv and env."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from mlops_provider.operators.local import LOCAL_PASSTHROUGH_ENV, LocalStepOperator
from tests.dags.helpers import load_dags, render_context, rendered

KUBERNETES_VERSION = "1.33"
MLFLOW_URL = "http://127.0.0.1:5999"


@pytest.fixture(autouse=True)
def _mlflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only rendered into env values here; nothing connects to it.
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", MLFLOW_URL)
    monkeypatch.setenv("MLOPS_DATA_ROOT", "/data")


#: Tasks that are Airflow-native (they wait or ask a person) rather than a step's command line.
NOT_STEPS = {
    "mlops_deployment__churn.wait_for_candidate",
    "mlops_deployment__churn.approve",
    "mlops_deployment__churn.release_rolled_back",
    "mlops_monitoring__churn.announce_drift",  # turns the monitor's XCom into an asset event
}


def _tasks(dags: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every step task of every DAG (the ones that run ``mlops-step``)."""
    return [
        (f"{dag_id}.{t.task_id}", t)
        for dag_id, dag in sorted(dags.items())
        for t in dag.tasks
        if f"{dag_id}.{t.task_id}" not in NOT_STEPS
    ]


def _manifest(task: Any) -> dict[str, Any]:
    pod = rendered(task).build_pod_request_obj(render_context(task.dag, task.task_id), dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in manifest["spec"]["containers"] if c["name"] == "base")


def test_every_task_renders_a_schema_valid_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    tasks = _tasks(load_dags(monkeypatch, "kubernetes"))
    assert tasks
    for name, task in tasks:
        assert isinstance(task, KubernetesPodOperator), name
        manifest = _manifest(task)
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)

        assert task.on_finish_action.value == "delete_pod", name
        assert task.log_events_on_failure and task.get_logs, name
        assert task.log_pod_spec_on_failure is False, name  # the spec holds every env value
        labels = manifest["metadata"]["labels"]
        assert labels["dag_id"] == task.dag_id and labels["task_id"] == task.task_id, name
        assert labels["run_id"] and labels["try_number"] == "1", name
        assert labels["app.kubernetes.io/part-of"] == "airflow-mlops", name

        spec = manifest["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name  # target: the service
        container = _container(manifest)
        assert container["command"] == ["mlops-step"], name
        assert set(container["resources"]["requests"]) == {"cpu", "memory"}, name
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert {"name": "mlops-data", "mountPath": "/data"} in container["volumeMounts"], name


def test_on_an_object_store_data_root_pods_mount_scratch_space_not_the_shared_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_DATA_ROOT", "s3://mlops-data/pipeline")
    for name, task in _tasks(load_dags(monkeypatch, "kubernetes")):
        manifest = _manifest(task)
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
        assert volumes["mlops-data"] == {"name": "mlops-data", "emptyDir": {}}, name
        container = _container(manifest)
        mounts = [m for m in container["volumeMounts"] if m["name"] == "mlops-data"]
        scratch = f"{tempfile.gettempdir()}/mlops-scratch"  # the working copies' parent
        assert mounts == [{"name": "mlops-data", "mountPath": scratch}], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLOPS_DATA_ROOT"] == "s3://mlops-data/pipeline", name  # the store, not a copy


def test_pods_carry_secrets_only_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_names = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak-me")
    for name, task in _tasks(load_dags(monkeypatch, "kubernetes")):
        manifest = _manifest(task)
        assert "do-not-leak-me" not in json.dumps(manifest), name
        env = {e["name"]: e for e in _container(manifest)["env"]}
        for secret in secret_names:
            assert "value" not in env[secret], (name, secret)
            ref = env[secret]["valueFrom"]["secretKeyRef"]
            assert ref["name"].startswith("mlops-") and ref["optional"] is True, (name, secret)


def test_connection_credentials_reach_pods_only_by_secret_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Airflow splits a URI's user info into the connection's login and password.
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://svc-mlflow:s3cret@127.0.0.1:5999")
    for name, task in _tasks(load_dags(monkeypatch, "kubernetes")):
        manifest = _manifest(task)
        text = json.dumps(manifest)
        assert "s3cret" not in text and "svc-mlflow" not in text, name
        env = {e["name"]: e for e in _container(manifest)["env"]}
        assert env["MLFLOW_TRACKING_URI"] == {"name": "MLFLOW_TRACKING_URI", "value": MLFLOW_URL}
        assert env["MLFLOW_TRACKING_PASSWORD"] == {
            "name": "MLFLOW_TRACKING_PASSWORD",
            "valueFrom": {
                "secretKeyRef": {"name": "mlops-mlflow", "key": "password", "optional": True}
            },
        }, name


@pytest.mark.parametrize(
    "host", ["https://svc-mlflow:s3cret@mlflow.example", "svc-mlflow:s3cret@mlflow.example"]
)
def test_a_connection_host_holding_credentials_fails_the_task_instead_of_leaking(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    from mlops_provider.operators.env_guard import CredentialsInUrl

    # A connection whose host field itself holds user:pass@ (as a form or JSON may set it).
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": host})
    )
    for runner in ("kubernetes", "local"):
        for name, task in _tasks(load_dags(monkeypatch, runner)):
            with pytest.raises(CredentialsInUrl) as caught:
                _manifest(task) if runner == "kubernetes" else rendered(task)
            message = str(caught.value)
            assert "'mlflow_default'" in message and "login/password" in message, name
            assert "s3cret" not in message, name


def _local_and_pod(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, dict[str, Any]]]:
    local = load_dags(monkeypatch, "local")
    pods = {name: _manifest(task) for name, task in _tasks(load_dags(monkeypatch, "kubernetes"))}
    pairs = []
    for name, task in _tasks(local):
        assert isinstance(task, LocalStepOperator), name
        pairs.append((name, rendered(task), pods.pop(name)))
    assert not pods, f"tasks only in Kubernetes mode: {sorted(pods)}"
    return pairs


def test_both_runners_render_identical_argv_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, local, manifest in _local_and_pod(monkeypatch):
        container = _container(manifest)
        assert [*local.cmds, *local.arguments] == [*container["command"], *container["args"]], name
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        refs = {e["name"] for e in container["env"] if "valueFrom" in e}
        assert local.env_vars == plain, name
        assert set(local.secret_env) == refs, name
        assert plain["MLFLOW_TRACKING_URI"] == MLFLOW_URL, name
        assert plain["MLOPS_AIRFLOW_DAG_ID"] == local.dag_id, name
        if local.dag_id == "mlops_training__churn":
            partition = container["args"].index("--partition") + 1
            assert container["args"][partition] == "20261116T000000", name
        if local.dag_id == "mlops_deployment__churn" and local.task_id != "resolve":
            # The release steps act on the version resolve picked (from its XCom).
            assert container["args"][container["args"].index("--version") + 1] == "7", name


def test_every_dag_is_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    dags = load_dags(monkeypatch, "kubernetes")
    assert set(dags) == {
        "mlops_training__churn",
        "mlops_deployment__churn",
        "mlops_rollback__churn",
        "mlops_monitoring__churn",
        "mlops_batch_scoring__churn",
    }
    every = {f"{dag_id}.{t.task_id}" for dag_id, dag in dags.items() for t in dag.tasks}
    assert every >= NOT_STEPS


def test_release_steps_get_the_api_token_only_for_a_kubernetes_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_DEPLOY_TARGET", "kubernetes")
    # Every release verb but resolve (which only reads the registry) reads or changes Deployments.
    release_verbs = {"build-image", "canary", "analyze", "promote", "rollback", "restore"}
    for name, task in _tasks(load_dags(monkeypatch, "kubernetes")):
        manifest = _manifest(task)
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        verb = _container(manifest)["args"][0]
        assert manifest["spec"]["automountServiceAccountToken"] is (verb in release_verbs), name
        env = {e["name"]: e for e in _container(manifest)["env"]}
        if verb in {*release_verbs, "resolve"}:
            assert env["MLOPS_DEPLOY_TARGET"]["value"] == "kubernetes", name
            ref = env["SERVING_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "mlops-serving", "key": "admin_token", "optional": True}, name
        else:
            assert "SERVING_ADMIN_TOKEN" not in env, name


def _probe(directory: Path) -> Path:
    """An executable that reports the argv and environment it was started with."""
    script = directory / "probe"
    script.write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        "print('MLOPS_RESULT ' + json.dumps({'argv': sys.argv[1:], 'env': dict(os.environ)}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_the_local_child_process_receives_the_pod_argv_and_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-worker-env")  # a secret the worker holds
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)  # and one it does not
    probe = _probe(tmp_path)
    for name, local, manifest in _local_and_pod(monkeypatch):
        local.cmds = [str(probe)]
        seen = local.execute(context={})
        container = _container(manifest)
        assert seen["argv"] == container["args"], name
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        inherited = set(LOCAL_PASSTHROUGH_ENV) | {"PATH", "AWS_ACCESS_KEY_ID", "PWD", "LC_CTYPE"}
        assert {k: v for k, v in seen["env"].items() if k not in inherited} == plain, name
        assert seen["env"]["AWS_ACCESS_KEY_ID"] == "from-worker-env"
        assert "AWS_SECRET_ACCESS_KEY" not in seen["env"]
        assert seen["env"]["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_the_analysis_gets_the_deployments_golden_set_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The golden set is a deployment setting (not a Param): the worker's value reaches the
    analyze step's pod, or the step would fall back to refusing a first release."""
    monkeypatch.setenv("MLOPS_ANALYSIS_FIRST_RELEASE", "candidate_holdout")
    monkeypatch.setenv("MLOPS_ANALYSIS_REFERENCE_SET", "golden@" + "ab" * 32)
    analyze = load_dags(monkeypatch, "kubernetes")["mlops_deployment__churn"].get_task(
        "analyze_canary"
    )
    env = {e["name"]: e for e in _container(_manifest(analyze))["env"]}
    assert env["MLOPS_ANALYSIS_FIRST_RELEASE"]["value"] == "candidate_holdout"
    assert env["MLOPS_ANALYSIS_REFERENCE_SET"]["value"] == "golden@" + "ab" * 32
