"""MlflowHook against a real MLflow server (and a loopback stub for 401/503)."""

from __future__ import annotations

import asyncio

import pytest

from mlops_provider.hooks.mlflow import CONFIG_ERROR, MlflowApiError, MlflowHook
from tests.provider.conftest import Registry, StubServer

pytestmark = pytest.mark.timeout(300)


def test_alias_absent_then_present_then_deleted(registry: Registry) -> None:
    hook = MlflowHook()
    assert hook.get_version_by_alias("no_such_model_xyz", "challenger") is None
    assert hook.get_version_by_alias(registry.model, "challenger") is None  # model, no alias

    version = registry.add_version(team="ml")
    hook.set_alias(registry.model, "challenger", version)
    found = hook.get_version_by_alias(registry.model, "challenger")
    assert found is not None
    assert found["version"] == version and found["status"] == "READY"
    assert found["tags"] == {"team": "ml"} and "challenger" in found["aliases"]
    assert asyncio.run(hook.aget_version_by_alias(registry.model, "challenger")) == found

    hook.delete_alias(registry.model, "challenger")
    hook.delete_alias(registry.model, "challenger")  # idempotent
    assert hook.get_version_by_alias(registry.model, "challenger") is None
    assert asyncio.run(hook.aget_version_by_alias(registry.model, "challenger")) is None


def test_version_tags_and_run(registry: Registry) -> None:
    hook = MlflowHook()
    version = registry.add_version()
    hook.set_version_tag(registry.model, version, "mlops.deploy.status", "rejected")
    got = hook.get_model_version(registry.model, version)
    assert got["tags"] == {"mlops.deploy.status": "rejected"} and got["aliases"] == []
    assert asyncio.run(hook.aget_model_version(registry.model, int(version))) == got

    experiment = registry.client.create_experiment(f"exp-hook-{registry.model}")
    run = registry.client.create_run(experiment)
    registry.client.log_metric(run.info.run_id, "auc", 0.9)
    fetched = hook.get_run(run.info.run_id)
    assert fetched["info"]["run_id"] == run.info.run_id
    assert fetched["data"]["metrics"][0]["key"] == "auc"


def test_errors_name_server_connection_and_model(registry: Registry) -> None:
    hook = MlflowHook()
    with pytest.raises(MlflowApiError) as missing:
        hook.get_model_version(registry.model, 99)
    err = missing.value
    assert err.not_found and not err.transient and err.status_code == 404
    assert registry.url in str(err) and "'mlflow_default'" in str(err)
    assert registry.model in str(err)

    with pytest.raises(MlflowApiError) as bad_alias:  # malformed, not "absent"
        hook.get_version_by_alias(registry.model, "Bad Alias")
    assert bad_alias.value.status_code == 400 and "Bad Alias" in str(bad_alias.value)


def test_unreachable_server_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow_server import free_port

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowApiError) as caught:
        MlflowHook(timeout=2).get_version_by_alias("m", "a")
    assert caught.value.transient and caught.value.status_code is None
    assert "did not answer" in str(caught.value) and "'mlflow_default'" in str(caught.value)


def test_auth_failure_is_permanent_and_says_the_fix(
    stub_mlflow: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_STUB", stub_mlflow.url)
    stub_mlflow.script[:] = [(401, {"error_code": "UNAUTHENTICATED", "message": "log in"})]
    for call in (
        lambda: MlflowHook("mlflow_stub").get_version_by_alias("m", "a"),
        lambda: asyncio.run(MlflowHook("mlflow_stub").aget_version_by_alias("m", "a")),
    ):
        with pytest.raises(MlflowApiError) as caught:
            call()
        assert caught.value.status_code == 401 and not caught.value.transient
        assert "'mlflow_stub'" in str(caught.value) and "login/password" in str(caught.value)


def test_missing_connection_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(MlflowApiError) as caught:
        MlflowHook("mlflow_nowhere").get_model_version("m", 1)
    assert caught.value.status_code == CONFIG_ERROR and not caught.value.transient
    assert "AIRFLOW_CONN_MLFLOW_NOWHERE" in str(caught.value)


def test_tracking_uri_and_macro_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_provider.hooks.mlflow import mlflow_tracking_uri

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_X", "http://mlflow.internal:5000")
    assert MlflowHook("mlflow_x").tracking_uri() == "http://mlflow.internal:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://fallback:5000")
    assert mlflow_tracking_uri("mlflow_absent") == "http://fallback:5000"


def test_one_hook_reads_its_connection_once_per_path(
    stub_mlflow: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers: the endpoint and the HTTP session are built once per hook; triggers: the async
    endpoint likewise, read with aget_connection."""
    from airflow.sdk import Connection

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_STUB", stub_mlflow.url)
    stub_mlflow.script[:] = [(200, {"model_version": {"name": "m", "version": "3"}})]
    reads: list[str] = []
    read, aread = MlflowHook.get_connection, MlflowHook.aget_connection

    def counted(conn_id: str) -> Connection:
        reads.append(conn_id)
        return read(conn_id)

    async def acounted(conn_id: str) -> Connection:
        reads.append(f"async {conn_id}")
        return await aread(conn_id)

    monkeypatch.setattr(MlflowHook, "get_connection", staticmethod(counted))
    monkeypatch.setattr(MlflowHook, "aget_connection", staticmethod(acounted))
    hook = MlflowHook("mlflow_stub")
    assert hook.get_model_version("m", 3)["version"] == "3"
    assert hook.get_model_version("m", "3")["version"] == "3"
    assert hook.session is hook.session and hook.session.auth is None

    async def twice() -> None:
        for _ in range(2):
            assert (await hook.aget_model_version("m", 3))["version"] == "3"

    asyncio.run(twice())
    assert reads == ["mlflow_stub", "async mlflow_stub"]
    assert stub_mlflow.seen == ["GET /api/2.0/mlflow/model-versions/get?name=m&version=3"] * 4
