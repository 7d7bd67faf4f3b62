"""One service per model: each model's release steps reach its own service through its serving
connection ``mlops_serving__<model>`` (host/port/schema = the URL, password = the admin token),
and fall back to the deployment-wide ``MLOPS_SERVICE_URL`` and ``mlops_serving`` token only when
the model has no connection of its own. The token never becomes a rendered env value."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.dags.helpers import load_dags, render_context, rendered, write_models

DEPLOYMENT_WIDE_URL = "http://127.0.0.1:8000"
UPSELL_TOKEN = "upsell-admin-token-0123456789"
SHARED_TOKEN = "deployment-wide-token-0123456789"
RELEASE_VERBS = {"canary", "analyze", "promote", "rollback", "restore", "build-image", "resolve"}


@pytest.fixture
def two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = write_models(tmp_path / "models", ["churn", "upsell"])
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("MLOPS_SERVICE_URL", DEPLOYMENT_WIDE_URL)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_SERVING", json.dumps({"conn_type": "http", "password": SHARED_TOKEN})
    )
    for name in ("SERVING_ADMIN_TOKEN", "MLOPS_MODEL_SERVICE_URL", "MLOPS_K8S_SERVING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_SERVING__UPSELL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_SERVING__CHURN", raising=False)
    return models


def _upsell_connection(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLOPS_SERVING__UPSELL", json.dumps({"conn_type": "http", **fields})
    )


def _release_tasks(dags: dict[str, Any], model: str) -> list[Any]:
    tasks = [
        task
        for kind in ("deployment", "rollback")
        for task in dags[f"mlops_{kind}__{model}"].tasks
        if getattr(task, "arguments", None) and task.arguments[0] in RELEASE_VERBS
    ]
    assert {task.arguments[0] for task in tasks} == RELEASE_VERBS
    return tasks


def test_release_steps_name_their_models_connection_first(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dags = load_dags(monkeypatch, "local")
    for model in ("churn", "upsell"):
        for task in _release_tasks(dags, model):
            assert task.env_vars["MLOPS_MODEL_SERVICE_URL"] == (
                f"{{{{ model_service_url('mlops_serving__{model}') }}}}"
            ), task.task_id
            assert task.env_vars["MLOPS_SERVICE_URL"] == DEPLOYMENT_WIDE_URL
            assert task.secret_connections["SERVING_ADMIN_TOKEN"] == (
                (f"mlops_serving__{model}", "password"),
                ("mlops_serving", "password"),
            ), task.task_id
            assert task.secret_env.count("SERVING_ADMIN_TOKEN") == 1


def test_a_model_with_its_own_connection_gets_its_url_and_token(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.core.settings import load_settings

    _upsell_connection(
        monkeypatch, host="127.0.0.1", port=8123, schema="http", password=UPSELL_TOKEN
    )
    dags = load_dags(monkeypatch, "local")
    upsell = rendered(dags["mlops_deployment__upsell"].get_task("canary"))
    churn = rendered(dags["mlops_deployment__churn"].get_task("canary"))
    assert upsell.env_vars["MLOPS_MODEL_SERVICE_URL"] == "http://127.0.0.1:8123"
    assert churn.env_vars["MLOPS_MODEL_SERVICE_URL"] == ""  # no connection of its own
    for task in (upsell, churn):  # the token is never a rendered (UI-visible) value
        assert UPSELL_TOKEN not in json.dumps(task.env_vars)
        assert SHARED_TOKEN not in json.dumps(task.env_vars)

    lines: list[str] = []
    log = SimpleNamespace(info=lambda message, *args: lines.append(message % args))
    monkeypatch.setattr(type(upsell), "log", log)
    upsell_env = upsell.process_environment()
    churn_env = churn.process_environment()
    logged = "\n".join(lines)
    assert upsell_env["SERVING_ADMIN_TOKEN"] == UPSELL_TOKEN
    assert churn_env["SERVING_ADMIN_TOKEN"] == SHARED_TOKEN
    assert "SERVING_ADMIN_TOKEN: from connection mlops_serving__upsell (password)" in logged
    assert "SERVING_ADMIN_TOKEN: from connection mlops_serving (password)" in logged
    assert UPSELL_TOKEN not in logged and SHARED_TOKEN not in logged

    # What the step process reads: its model's service, else the deployment-wide one.
    for env, url in ((upsell_env, "http://127.0.0.1:8123"), (churn_env, DEPLOYMENT_WIDE_URL)):
        with pytest.MonkeyPatch.context() as step:
            for name in ("MLOPS_MODEL_SERVICE_URL", "MLOPS_SERVICE_URL"):
                step.setenv(name, env[name])
            assert load_settings().deploy.service_url == url


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"host": "http://10.1.2.3:9000/", "password": UPSELL_TOKEN}, "http://10.1.2.3:9000"),
        (
            {"host": "upsell.mlops.svc", "schema": "https", "port": 443},
            "https://upsell.mlops.svc:443",
        ),
        ({"host": "upsell.mlops.svc"}, "http://upsell.mlops.svc"),
        ({"password": UPSELL_TOKEN}, ""),  # a token only: the URL stays deployment-wide
    ],
)
def test_the_url_is_read_as_the_http_provider_reads_a_connection(
    two_models: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], url: str
) -> None:
    _upsell_connection(monkeypatch, **fields)
    dags = load_dags(monkeypatch, "local")
    task = rendered(dags["mlops_rollback__upsell"].get_task("restore_previous_champion"))
    assert task.env_vars["MLOPS_MODEL_SERVICE_URL"] == url


def test_a_models_connection_without_a_token_never_borrows_the_deployment_wide_one(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _upsell_connection(monkeypatch, host="127.0.0.1", port=8123)
    dags = load_dags(monkeypatch, "local")
    env = rendered(dags["mlops_deployment__upsell"].get_task("promote")).process_environment()
    assert env["MLOPS_MODEL_SERVICE_URL"] == "http://127.0.0.1:8123"
    assert "SERVING_ADMIN_TOKEN" not in env  # the step fails closed, naming the variable


def test_credentials_in_a_models_connection_host_fail_the_task(
    two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.operators.env_guard import CredentialsInUrl

    _upsell_connection(monkeypatch, host="http://admin:hunter2@127.0.0.1:8123")
    dags = load_dags(monkeypatch, "local")
    with pytest.raises(CredentialsInUrl) as caught:
        rendered(dags["mlops_deployment__upsell"].get_task("canary"))
    assert "'mlops_serving__upsell' (host) holds credentials" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def _pod_env(task: Any) -> list[dict[str, Any]]:
    from kubernetes.client import ApiClient

    pod = rendered(task).build_pod_request_obj(render_context(task.dag, task.task_id), dry_run=True)
    manifest = ApiClient().sanitize_for_serialization(pod)
    env: list[dict[str, Any]] = manifest["spec"]["containers"][0]["env"]
    return env


@pytest.mark.parametrize(
    ("secret_setting", "secrets"),
    [
        (None, {"churn": "mlops-serving", "upsell": "mlops-serving"}),
        (
            "{model}-serving-admin",
            {"churn": "churn-serving-admin", "upsell": "upsell-serving-admin"},
        ),
    ],
)
def test_a_pod_gets_one_token_reference_per_model(
    two_models: Path,
    monkeypatch: pytest.MonkeyPatch,
    secret_setting: str | None,
    secrets: dict[str, str],
) -> None:
    if secret_setting:
        monkeypatch.setenv("MLOPS_K8S_SERVING_SECRET", secret_setting)
    _upsell_connection(monkeypatch, host="upsell-serving.mlops.svc", port=8000)
    dags = load_dags(monkeypatch, "kubernetes")
    for model, secret in secrets.items():
        env = _pod_env(dags[f"mlops_deployment__{model}"].get_task("analyze_canary"))
        tokens = [e for e in env if e["name"] == "SERVING_ADMIN_TOKEN"]
        assert tokens == [
            {
                "name": "SERVING_ADMIN_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": secret, "key": "admin_token", "optional": True}
                },
            }
        ], model
        urls = {e["name"]: e.get("value") for e in env if e["name"].endswith("SERVICE_URL")}
        own = "http://upsell-serving.mlops.svc:8000" if model == "upsell" else ""
        assert urls == {"MLOPS_MODEL_SERVICE_URL": own, "MLOPS_SERVICE_URL": DEPLOYMENT_WIDE_URL}
