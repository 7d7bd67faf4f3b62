"""MlflowModelVersionTrigger: its run() coroutine against the real MLflow server."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from typing import Any

import pytest

from mlops_provider.triggers.registry import MlflowModelVersionTrigger, VersionCondition
from tests.provider.conftest import Registry, StubServer

pytestmark = pytest.mark.timeout(300)

CLASSPATH = "mlops_provider.triggers.registry.MlflowModelVersionTrigger"


async def _first_event(trigger: MlflowModelVersionTrigger, within: float) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("trigger ended without an event")

    return await asyncio.wait_for(first(), timeout=within)


def _later(delay: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_serialize_round_trip() -> None:
    trigger = MlflowModelVersionTrigger(
        "churn",
        alias="challenger",
        tag_absent="mlops.deploy.status",
        mlflow_conn_id="mlflow_prod",
        poll_interval=15,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert kwargs == {
        "model_name": "churn",
        "alias": "challenger",
        "version": None,
        "tag_absent": "mlops.deploy.status",
        "tag_equals": {},
        "mlflow_conn_id": "mlflow_prod",
        "poll_interval": 15.0,
        "request_timeout": 30.0,
        "deadline": None,
    }
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_condition_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="alias"):
        VersionCondition.build("churn", version="", alias=None)
    with pytest.raises(ValueError, match="version number"):
        VersionCondition.build("churn", version="latest")
    # A rendered-empty version falls back to the alias ("deploy this version, else challenger").
    fallback = VersionCondition.build("churn", alias="challenger", version="None")
    assert fallback.version is None and fallback.alias == "challenger"


def test_fires_when_alias_is_set_later(registry: Registry) -> None:
    version = registry.add_version()
    trigger = MlflowModelVersionTrigger(registry.model, alias="challenger", poll_interval=0.2)
    started = time.monotonic()
    _later(
        1.0,
        lambda: registry.client.set_registered_model_alias(registry.model, "challenger", version),
    )
    event = asyncio.run(_first_event(trigger, within=30))
    assert 1.0 <= time.monotonic() - started < 15
    assert event["status"] == "found"
    assert event["version"]["version"] == version
    assert event["version"]["name"] == registry.model
    assert "challenger" in event["version"]["aliases"]


def test_decided_version_does_not_satisfy_tag_absent(registry: Registry) -> None:
    decided = registry.add_version(**{"mlops.deploy.status": "rejected"})
    registry.client.set_registered_model_alias(registry.model, "challenger", decided)
    trigger = MlflowModelVersionTrigger(
        registry.model, alias="challenger", tag_absent="mlops.deploy.status", poll_interval=0.2
    )
    with pytest.raises(TimeoutError):
        asyncio.run(_first_event(trigger, within=1.5))

    fresh = registry.add_version()
    _later(
        0.5, lambda: registry.client.set_registered_model_alias(registry.model, "challenger", fresh)
    )
    event = asyncio.run(_first_event(trigger, within=30))
    assert event["status"] == "found" and event["version"]["version"] == fresh
    assert "mlops.deploy.status" not in event["version"]["tags"]


def test_deadline_ends_the_wait_with_the_last_reason(registry: Registry) -> None:
    """Bounded by itself, so an inline run (dag.test) ends like a triggerer-enforced timeout."""
    decided = registry.add_version(**{"mlops.deploy.status": "promoted"})
    registry.client.set_registered_model_alias(registry.model, "challenger", decided)
    trigger = MlflowModelVersionTrigger(
        registry.model,
        alias="challenger",
        tag_absent="mlops.deploy.status",
        poll_interval=0.2,
        deadline=time.time() + 1.0,
    )
    event = asyncio.run(_first_event(trigger, within=30))
    assert event == {
        "status": "timeout",
        "message": f"version {decided} has tag mlops.deploy.status='promoted'",
    }


def test_waits_for_a_version_number_to_become_ready(registry: Registry) -> None:
    registry.add_version()
    trigger = MlflowModelVersionTrigger(
        registry.model, version="2", tag_equals={"gate": "passed"}, poll_interval=0.2
    )
    _later(0.8, lambda: registry.add_version(gate="passed"))
    event = asyncio.run(_first_event(trigger, within=30))
    assert event["status"] == "found"
    assert event["version"]["version"] == "2" and event["version"]["status"] == "READY"


def test_transient_errors_are_retried(
    stub_mlflow: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_STUB", stub_mlflow.url)
    version = {"name": "m", "version": "4", "status": "READY", "aliases": ["challenger"]}
    stub_mlflow.script[:] = [
        (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "restarting"}),
        (502, "bad gateway"),
        (200, {"model_version": version}),
    ]
    trigger = MlflowModelVersionTrigger(
        "m", alias="challenger", mlflow_conn_id="mlflow_stub", poll_interval=0.05
    )
    event = asyncio.run(_first_event(trigger, within=10))
    assert event == {"status": "found", "version": {**version, "tags": {}, "run_id": ""}}
    assert len(stub_mlflow.seen) == 3


def test_permanent_misconfiguration_yields_error(
    stub_mlflow: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_STUB", stub_mlflow.url)
    stub_mlflow.script[:] = [(403, {"error_code": "PERMISSION_DENIED", "message": "no access"})]
    trigger = MlflowModelVersionTrigger("m", version="3", mlflow_conn_id="mlflow_stub")
    event = asyncio.run(_first_event(trigger, within=10))
    assert event["status"] == "error"
    assert "HTTP 403" in event["message"] and "'mlflow_stub'" in event["message"]
    assert "m version 3" in event["message"]
