"""The training DAG end to end through Airflow's own dag.test(), against a real MLflow server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
import pytest
from mlflow import MlflowClient

from tests.dags.helpers import for_dag_test, load_dags

pytestmark = pytest.mark.e2e
ROWS = 10_000
# The latency check has its own tests; here it must not turn a busy CI machine into a failure.
CONF = {"rows": ROWS, "max_latency_ms": 500}


@pytest.fixture
def training_dag(
    airflow_db: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, MlflowClient, str]:
    from mlops_steps.core.settings import load_settings

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", tracking)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the tasks must get it from the connection
    model = load_settings().model_name  # the test's own (tracking), with churn's contract
    dag = for_dag_test(load_dags(monkeypatch, "local")[f"mlops_training__{model}"])
    monkeypatch.delenv("MLOPS_RUNNER")
    return dag, MlflowClient(tracking), model


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _registry(client: MlflowClient, name: str) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        "versions": sorted(int(v.version) for v in versions),
        "aliases": dict(client.get_registered_model(name).aliases) if versions else {},
    }


def test_training_dag_registers_a_challenger_once(
    training_dag: tuple[Any, MlflowClient, str],
) -> None:
    dag, client, model_name = training_dag
    logical_date = pendulum.datetime(2026, 11, 16, tz="UTC")
    run = dag.test(logical_date=logical_date, run_conf=CONF)
    assert str(run.state) == "success", _states(run)
    assert set(_states(run).values()) == {"success"}

    assert _registry(client, model_name) == {"versions": [1], "aliases": {"challenger": "1"}}
    version = client.get_model_version(model_name, "1")
    assert version.tags["mlops.gate.decision"] == "passed"
    assert version.tags["mlops.partition"] == "20261116T000000"
    assert version.run_id
    mlflow_run = client.get_run(version.run_id)
    assert mlflow_run.data.tags["mlops.airflow_dag_id"] == f"mlops_training__{model_name}"
    assert mlflow_run.data.tags["mlops.airflow_run_id"] == run.run_id
    assert mlflow_run.data.tags["mlops.data_sha256"] == version.tags["mlops.data_sha256"]
    assert mlflow_run.data.metrics["holdout_auc"] >= 0.8
    assert mlflow_run.data.params["rows"] == str(ROWS)

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == "register",
                XComModel.key == "return_value",
            )
        ).one()
        assert XComModel.deserialize_value(row)["version"] == "1"
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(
                AssetModel.uri == f"mlops://{model_name}/challenger",
                AssetEvent.source_run_id == run.run_id,
            )
        ).all()
        assert len(events) == 1, "register must announce the new challenger as an asset event"

    # Re-running the same logical date reuses the training run and registers nothing new.
    again = dag.test(logical_date=logical_date, run_conf=CONF)
    assert str(again.state) == "success", _states(again)
    assert _registry(client, model_name) == {"versions": [1], "aliases": {"challenger": "1"}}
    assert len(client.search_runs([mlflow_run.info.experiment_id])) == 1


def test_failing_gate_fails_the_run_and_registers_nothing(
    training_dag: tuple[Any, MlflowClient, str],
) -> None:
    dag, client, model_name = training_dag
    run = dag.test(
        logical_date=pendulum.datetime(2026, 11, 9, tz="UTC"),
        # The run's own gate checks (the gate_checks Param; empty = the contract's).
        run_conf={"rows": ROWS, "gate_checks": '[{"metric": "auc", "threshold": 0.99}]'},
    )
    states = _states(run)
    assert str(run.state) == "failed", states
    assert states["gate"] == "failed" and states["register"] == "upstream_failed", states
    assert _registry(client, model_name) == {"versions": [], "aliases": {}}
    experiment = client.get_experiment_by_name(f"exp-{model_name}")
    assert experiment is not None
    failed_runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`mlops.gate.decision` = 'failed'",
    )
    assert len(failed_runs) == 1
    assert "auc" in failed_runs[0].data.tags["mlops.gate.reason"]
