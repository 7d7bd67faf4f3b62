"""A real DAG's task failing under dag.test(): the training DAG with a source that does not exist.

``ingest`` rejects it (exit 2, no retry), the run fails, and its failure callback writes exactly
one alert naming the DAG, task, run and log URL; the tasks it blocks (upstream_failed) add none.
The DAG keeps its DeadlineAlerts (unlike tests/dags/helpers.for_dag_test): the Airflow 3.3.2
dag.test() crash is on a *successful* run, and here run creation evaluates the Param deadline.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pendulum
import pytest

from tests.dags.helpers import load_dags

pytestmark = pytest.mark.e2e


def test_failed_ingest_alerts_once(
    airflow_db: Path, mlops_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow_server import free_port

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.test:8080")
    dag = load_dags(monkeypatch, "local")["mlops_training__churn"]
    monkeypatch.delenv("MLOPS_RUNNER")

    run = dag.test(
        logical_date=pendulum.datetime(2026, 11, 9, tz="UTC"),
        run_conf={"source_uri": str(tmp_path / "missing.csv")},
    )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "failed", states
    assert states["ingest"] == "failed" and states["register"] == "upstream_failed"

    lines = (mlops_env / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    alert = json.loads(lines[0])
    assert {k: alert[k] for k in ("kind", "dag_id", "task_id", "run_id", "try")} == {
        "kind": "task_failed",
        "dag_id": "mlops_training__churn",
        "task_id": "ingest",
        "run_id": run.run_id,
        "try": 1,
    }
    assert alert["log_url"] == (
        f"http://airflow.test:8080/dags/mlops_training__churn/runs/{quote(run.run_id)}"
        "/tasks/ingest?try_number=1"
    )
    assert "rejected its input (exit 2)" in alert["message"]
