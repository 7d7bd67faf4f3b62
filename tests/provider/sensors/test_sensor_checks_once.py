"""The deployment's first task without a wait (issue 15): one check, a found candidate at once,
else a skip that says what it checked (MlflowModelVersionSensor with ``timeout=0``)."""

from __future__ import annotations

import time

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.sensors.registry import MlflowModelVersionSensor
from tests.provider.conftest import Registry

pytestmark = pytest.mark.timeout(300)


def _first_task(model: str) -> MlflowModelVersionSensor:
    return MlflowModelVersionSensor(
        task_id="wait_for_candidate",
        model_name=model,
        alias="challenger",
        tag_absent="mlops.deploy.status",
        deferrable=False,
        poke_interval=15,
        timeout=0,
        soft_fail=True,
    )


def test_a_candidate_is_found_by_the_one_check(registry: Registry) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, "challenger", version)
    started = time.monotonic()
    found = _first_task(registry.model).execute({})
    assert found["version"] == version and found["aliases"] == ["challenger"]
    assert time.monotonic() - started < 10  # no poke interval slept


def test_a_decided_candidate_skips_at_once_and_says_why(registry: Registry) -> None:
    version = registry.add_version()
    registry.client.set_registered_model_alias(registry.model, "challenger", version)
    client, model = registry.client, registry.model
    client.set_model_version_tag(model, version, "mlops.deploy.status", "promoted")
    started = time.monotonic()
    with pytest.raises(AirflowSkipException) as skipped:
        _first_task(registry.model).execute({})
    assert time.monotonic() - started < 10
    assert str(skipped.value) == (
        f"soft_fail: checked once (no wait configured) for {registry.model}@challenger (READY, "
        f"tag 'mlops.deploy.status' absent) on MLflow connection 'mlflow_default'; last check: "
        f"version {version} has tag mlops.deploy.status='promoted'. The candidate was decided "
        f"or moved on since the event that started this run."
    )
