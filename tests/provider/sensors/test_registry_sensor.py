"""MlflowModelVersionSensor: deferral, poking, reschedule, timeouts and soft_fail."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from mlops_provider.sensors.registry import MlflowModelVersionSensor
from mlops_provider.triggers.registry import MlflowModelVersionTrigger
from tests.provider.conftest import Registry, StubServer

pytestmark = pytest.mark.timeout(300)

TIMEOUT_FAIL = {"error": TriggerFailureReason.TRIGGER_TIMEOUT.value}


def _sensor(model: str, **kwargs: Any) -> MlflowModelVersionSensor:
    kwargs.setdefault("alias", "challenger")
    kwargs.setdefault("tag_absent", "mlops.deploy.status")
    return MlflowModelVersionSensor(task_id="wait_for_candidate", model_name=model, **kwargs)


def test_defers_to_the_trigger_with_the_timeout(registry: Registry) -> None:
    sensor = _sensor(registry.model, poke_interval=15, timeout=3600)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=3600)
    trigger = deferred.value.trigger
    assert isinstance(trigger, MlflowModelVersionTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "mlops_provider.triggers.registry.MlflowModelVersionTrigger"
    assert kwargs["model_name"] == registry.model and kwargs["alias"] == "challenger"
    assert kwargs["tag_absent"] == "mlops.deploy.status" and kwargs["poll_interval"] == 15
    assert 3590 < kwargs["deadline"] - time.time() <= 3600


def test_returns_at_once_when_already_satisfied(registry: Registry) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, "challenger", version)
    result = _sensor(registry.model).execute({})  # no TaskDeferred
    assert result["version"] == version and result["name"] == registry.model


def test_resumes_with_the_version_from_the_event(registry: Registry) -> None:
    sensor = _sensor(registry.model)
    version = {"name": registry.model, "version": "7", "tags": {}}
    event = {"status": "found", "version": version}
    assert sensor.resume_execution("execute_complete", {"event": event}, {}) == version
    error = {"status": "error", "message": "waiting for x: HTTP 403"}
    with pytest.raises(AirflowFailException, match="HTTP 403"):
        sensor.resume_execution("execute_complete", {"event": error}, {})


def test_a_timeout_event_fails_or_skips_with_the_last_reason(registry: Registry) -> None:
    event = {"status": "timeout", "message": "version 3 has tag mlops.deploy.status='promoted'"}
    with pytest.raises(AirflowSensorTimeout, match=r"timed out after 60 s .*'promoted'"):
        _sensor(registry.model, timeout=60).execute_complete({}, event)
    with pytest.raises(AirflowSkipException, match=r"soft_fail: timed out .*'promoted'"):
        _sensor(registry.model, timeout=60, soft_fail=True).execute_complete({}, event)
    # As a real triggerer resumes the task: through resume_execution, whose soft_fail handling
    # wraps any AirflowException (a skip too) in "Skipping due to soft_fail is set to True."
    # (found on the live stack: tests/e2e/test_faults_live.py).
    with pytest.raises(
        AirflowSkipException, match=r"^soft_fail: timed out after 60 s .*'promoted'"
    ):
        _sensor(registry.model, timeout=60, soft_fail=True).resume_execution(
            "execute_complete", {"event": event}, {}
        )


def test_poke_returns_the_version_as_xcom(registry: Registry) -> None:
    sensor = _sensor(registry.model, deferrable=False)
    assert not sensor.poke({}).is_done
    decided = registry.add_version(**{"mlops.deploy.status": "promoted"})
    registry.client.set_registered_model_alias(registry.model, "challenger", decided)
    assert not sensor.poke({}).is_done
    fresh = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, "challenger", fresh)
    done = sensor.poke({})
    assert done.is_done and done.xcom_value is not None and done.xcom_value["version"] == fresh
    assert sensor.execute({})["version"] == fresh  # poke mode returns it as the XCom


def test_rendered_empty_version_falls_back_to_alias(registry: Registry) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, "challenger", version)
    sensor = _sensor(registry.model, version="{{ params.version }}", deferrable=False)
    sensor.version = ""  # what the template renders for the default Param
    assert (sensor.poke({}).xcom_value or {})["version"] == version
    sensor.version = "1"
    assert (sensor.poke({}).xcom_value or {})["version"] == "1"


def test_reschedule_mode_frees_the_worker_slot(registry: Registry) -> None:
    sensor = _sensor(registry.model, deferrable=False, mode="reschedule", poke_interval=30)
    ti: Any = SimpleNamespace(get_first_reschedule_date=lambda context: None)  # all poke needs
    with pytest.raises(AirflowRescheduleException):
        sensor.execute({"ti": ti})


def test_poke_timeout_says_what_and_how_long(registry: Registry) -> None:
    sensor = _sensor(registry.model, deferrable=False, timeout=0.5, poke_interval=0.2)
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.execute({})
    message = str(caught.value)
    assert f"{registry.model}@challenger" in message and "0.5 s" in message
    assert "'mlops.deploy.status' absent" in message and "alias 'challenger' is not set" in message

    soft = _sensor(registry.model, deferrable=False, timeout=0.3, poke_interval=0.1, soft_fail=True)
    with pytest.raises(AirflowSkipException, match=f"soft_fail: timed out .*{registry.model}"):
        soft.execute({})


def test_deferral_timeout_says_what_and_how_long() -> None:
    sensor = _sensor("churn", timeout=7200)
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.resume_execution(TRIGGER_FAIL_REPR, TIMEOUT_FAIL, {})
    assert str(caught.value).startswith(
        "timed out after 7200 s (deferred) waiting for churn@challenger"
    )

    soft = _sensor("churn", timeout=60, soft_fail=True)
    with pytest.raises(AirflowSkipException, match="soft_fail: timed out after 60 s"):
        soft.resume_execution(TRIGGER_FAIL_REPR, TIMEOUT_FAIL, {})
    with pytest.raises(AirflowSkipException, match=r"soft_fail: .*HTTP 401"):
        soft.resume_execution(
            "execute_complete", {"event": {"status": "error", "message": "HTTP 401"}}, {}
        )


def test_permanent_error_fails_or_skips_without_retry(
    stub_mlflow: StubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_STUB", stub_mlflow.url)
    stub_mlflow.script[:] = [(401, {"error_code": "UNAUTHENTICATED", "message": "log in"})]
    with pytest.raises(AirflowFailException, match="HTTP 401"):
        _sensor("m", mlflow_conn_id="mlflow_stub").execute({})
    with pytest.raises(AirflowSkipException, match=r"soft_fail: .*HTTP 401"):
        _sensor("m", mlflow_conn_id="mlflow_stub", soft_fail=True).execute({})
    with pytest.raises(AirflowSkipException, match=r"soft_fail: .*HTTP 401"):
        _sensor("m", mlflow_conn_id="mlflow_stub", soft_fail=True, deferrable=False).execute({})


def test_literal_mistakes_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="give alias"):
        MlflowModelVersionSensor(task_id="s", model_name="churn")
    assert set(MlflowModelVersionSensor.template_fields) >= {"model_name", "alias", "version"}
