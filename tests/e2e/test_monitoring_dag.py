"""The monitoring DAG end to end through dag.test(): the real model service logs its predictions,
the monitor step runs as a child process against a real MLflow server, and a detected drift
becomes an asset event that queues the training DAG in Airflow's own database."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from tests.dags.helpers import for_dag_test, load_dags, return_value, task_states
from tests.fixtures.champion import Champion
from tests.service_process import Service, serve_and_wait_for_log
from tests.steps.monitoring.helpers import score, write_log

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "monitoring-admin-token-0123456789abcdef"
DRIFT_URI = "mlops://churn/drift-detected"
CHURN = load_contract("churn")


@pytest.fixture
def monitoring_dag(
    monitoring_env: Champion,
    airflow_db: Path,
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, Path]]:
    log_dir = tmp_path / "predictions"
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_server)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the task must get it from the connection
    monkeypatch.setenv("MLOPS_PREDICTION_LOG", str(log_dir))
    dag = for_dag_test(load_dags(monkeypatch, "local")["mlops_monitoring__churn"])
    monkeypatch.delenv("MLOPS_RUNNER")
    yield dag, log_dir
    _set_training_paused(True)


def _set_training_paused(paused: bool) -> None:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, update

    with create_session() as session:
        session.execute(
            update(DagModel)
            .where(DagModel.dag_id == "mlops_training__churn")
            .values(is_paused=paused)
        )
        if paused:  # leave no queued training run behind for other tests
            session.execute(
                delete(AssetDagRunQueue).where(
                    AssetDagRunQueue.target_dag_id == "mlops_training__churn"
                )
            )


def _drift_events(run: Any) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == DRIFT_URI, AssetEvent.source_run_id == run.run_id)
        ).all()
        return [dict(event.extra) for event in events]


def _serve_drifted_traffic(service: Service, log_dir: Path, rows: int) -> None:
    """Drifted customers through /predict/batch, 100 per request, until all are logged."""
    frame = generate_churn(rows, seed=41, drift=0.5)
    serve_and_wait_for_log(service, log_dir, frame, CHURN, timeout_s=30)


def test_drift_in_served_traffic_schedules_training_and_no_drift_emits_nothing(
    monitoring_dag: tuple[Any, Path],
    monitoring_env: Champion,
    mlflow_server: str,
    service_starter: Callable[..., Service],
) -> None:
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag, log_dir = monitoring_dag

    # 1. An hour of fresh traffic (the training distribution): judged, nothing emitted.
    quiet_end = pendulum.datetime(2026, 11, 21, 10, 15, tz="UTC")
    fresh = generate_churn(1500, seed=42)
    write_log(log_dir, fresh, score(monitoring_env.model, fresh),
              start=quiet_end - dt.timedelta(hours=1))  # fmt: skip
    quiet = dag.test(logical_date=quiet_end, run_conf={"window_hours": 1})
    states = task_states(quiet)
    assert states == {"monitor": "success", "announce_drift": "skipped"}, states
    summary = return_value(quiet, "monitor")
    assert summary["drift_detected"] is False and summary["rows"]["champion"] == 1500
    assert summary["window"]["end"] == quiet_end.isoformat()
    assert _drift_events(quiet) == []

    # 2. The real service answers drifted customers and logs them; the next run catches it.
    _set_training_paused(False)  # as in production: the training DAG is switched on
    service = service_starter(
        mlflow_server,
        model_name=monitoring_env.name,
        admin_token=ADMIN_TOKEN,
        SERVING_PREDICTION_LOG=str(log_dir),
    )
    _serve_drifted_traffic(service, log_dir, rows=2000)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep(max(0.0, (now - dt.datetime.now(dt.UTC)).total_seconds()))
    drifted = dag.test(logical_date=pendulum.instance(now), run_conf={"window_hours": 1})
    assert task_states(drifted) == {"monitor": "success", "announce_drift": "success"}
    summary = return_value(drifted, "monitor")
    assert summary["drift_detected"] is True and summary["rows"]["champion"] == 2000
    assert {"monthly_charges", "support_calls_90d"} <= set(summary["drifted_columns"])

    events = _drift_events(drifted)
    assert len(events) == 1, "one asset event per detected window"
    extra = events[0]
    assert extra == summary["asset_extra"]
    assert extra["champion_version"] == "1"
    assert extra["drifted_columns"] == summary["drifted_columns"]
    assert extra["window"] == {"start": summary["window"]["start"], "end": now.isoformat()}
    assert Path(extra["report"]).is_file() and extra["report"].endswith("data_drift.html")
    assert extra["mlflow_run"].startswith(mlflow_server)

    # 3. Airflow queued a training run for it: the scheduler's own query says it is due.
    with create_session() as session:
        queued = session.scalars(
            select(AssetDagRunQueue.target_dag_id)
            .join(AssetModel, AssetDagRunQueue.asset_id == AssetModel.id)
            .where(AssetModel.uri == DRIFT_URI)
        ).all()
        assert queued == ["mlops_training__churn"]
        _, triggered = DagModel.dags_needing_dagruns(session)
        assert "mlops_training__churn" in triggered
        session.rollback()


def test_no_champion_skips_the_run(
    airflow_db: Path, tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model nobody promoted yet: the monitor skips (exit 3), nothing fails, nothing fires."""
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", tracking)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLOPS_PREDICTION_LOG", str(tmp_path / "predictions"))
    model = os.environ["MLOPS_MODEL_NAME"]  # the test's own (tracking): nobody promoted it
    dag = for_dag_test(load_dags(monkeypatch, "local")[f"mlops_monitoring__{model}"])
    monkeypatch.delenv("MLOPS_RUNNER")
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 21, 8, 15, tz="UTC"))
    assert str(run.state) == "success", task_states(run)
    assert task_states(run) == {"monitor": "skipped", "announce_drift": "skipped"}
