"""Every DAG file imports cleanly, cheaply, and with nothing configured."""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest

from tests.dags.helpers import DAGS, REPO, load_dags

HEAVY_MODULES = ("mlflow", "lightgbm", "pandas", "great_expectations", "evidently", "sklearn",
                 "kubernetes", "boto3")  # fmt: skip


def test_dags_import_without_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    dags = load_dags(monkeypatch, "local")
    assert "mlops_training__churn" in dags


def test_dag_conventions(monkeypatch: pytest.MonkeyPatch) -> None:
    for dag in load_dags(monkeypatch, "local").values():
        assert "mlops" in dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        for task in dag.tasks:
            if task.task_id in {"wait_for_candidate", "approve", "release_rolled_back"}:
                # Waiting (or failing the run on purpose) is their job: a retry would only
                # restart the wait, re-ask a person or fail again.
                assert task.retries == 0, task.task_id
                continue
            assert task.retries >= 2, task.task_id
            assert task.retry_exponential_backoff, task.task_id
            assert task.execution_timeout is not None, task.task_id


def test_every_dag_alerts_on_failures_and_on_missed_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Airflow 3 has no SLAs: each DAG declares DeadlineAlerts, each of them fires before the
    run timeout would stop the run silently, and every task reports its final failure."""
    from airflow.sdk.definitions.callback import AsyncCallback

    from mlops_provider.notifications.deadlines import QueuedAtPlusParam
    from mlops_provider.notifications.notifier import MlopsNotifier

    dags = load_dags(monkeypatch, "local")
    for dag in dags.values():
        assert dag.deadline, f"{dag.dag_id} has no deadline"
        for alert in dag.deadline:
            assert alert.name, dag.dag_id
            assert isinstance(alert.callback, AsyncCallback), (dag.dag_id, alert.name)
            module, _, function = alert.callback.path.rpartition(".")
            callback = getattr(importlib.import_module(module), function)
            assert inspect.iscoroutinefunction(callback), alert.name
            due = alert.interval
            if isinstance(alert.reference, QueuedAtPlusParam):
                param = dag.params.get_param(alert.reference.param)
                assert param.value == alert.reference.default_minutes, alert.name
                due += timedelta(minutes=param.schema.get("maximum", param.value))
            if dag.dagrun_timeout is not None:
                assert due <= dag.dagrun_timeout, (dag.dag_id, alert.name)
        for task in dag.tasks:
            notifiers = [c for c in task.on_failure_callback if isinstance(c, MlopsNotifier)]
            assert [n.kind for n in notifiers] == ["task_failed"], (dag.dag_id, task.task_id)
    approve = dags["mlops_deployment__churn"].get_task("approve")
    assert [n.kind for n in approve.notifiers] == ["approval_waiting"]


def test_training_dag_shape_schedule_and_params(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = load_dags(monkeypatch, "local")["mlops_training__churn"]
    order = ["ingest", "validate", "train", "evaluate", "gate", "register"]
    for upstream, downstream in itertools.pairwise(order):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}
    timetable = dag.timetable
    assert type(timetable).__name__ == "AssetOrTimeSchedule"
    assert {a.uri for a in timetable.asset_condition.objects} == {
        "mlops://churn/training-data",
        "mlops://churn/drift-detected",
    }
    assert timetable.timetable.expression == "0 4 * * 1"
    assert dag.get_task("register").outlets[0].uri == "mlops://churn/challenger"
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert schema["rows"]["type"] == "integer" and schema["rows"]["minimum"] == 1000
    # The gate's metric checks default to the model contract's (models/churn.yaml).
    assert schema["gate_checks"]["type"] == "string"
    assert json.loads(dag.params.get_param("gate_checks").value) == [
        {"metric": "auc", "threshold": 0.75, "min_absolute_change": -0.01},
        {"metric": "accuracy", "threshold": 0.7},
    ]
    assert schema["source_uri"]["type"] == "string"
    assert dag.dagrun_timeout == timedelta(hours=3)


def _parse_in_fresh_process(extra_env: dict[str, str]) -> dict[str, Any]:
    """Parse the DAG folder in a new interpreter and report what the DAG files imported."""
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder={str(DAGS)!r})
loaded = {{m.split('.')[0] for m in set(sys.modules) - before}}
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                  "dags": sorted(bag.dags), "heavy": sorted(loaded & set({HEAVY_MODULES!r}))}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update({"PYTHONPATH": f"{REPO / 'include'}", **extra_env})
    completed = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_parse_needs_no_connections_variables_or_mlflow() -> None:
    from mlflow_server import free_port

    report = _parse_in_fresh_process(
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "MLOPS_RUNNER": "local"}
    )
    assert report["errors"] == {}
    assert "mlops_training__churn" in report["dags"]
    assert report["heavy"] == [], f"DAG files imported heavy modules at top level: {report}"


def test_kubernetes_mode_parses_without_a_cluster() -> None:
    report = _parse_in_fresh_process({"MLOPS_RUNNER": "kubernetes", "KUBECONFIG": "/nonexistent"})
    assert report["errors"] == {}
    assert "mlops_training__churn" in report["dags"]


def test_plugin_manager_does_not_shadow_packages_with_provider_files() -> None:
    """The provider is an installed package, not plugin files: Airflow's plugin manager imports
    nothing by a bare name (a hooks/mlflow.py there would replace the real mlflow package)."""
    code = (
        "import sys\n"
        "from airflow import plugins_manager\n"
        "plugins_manager.ensure_plugins_loaded()\n"
        "import mlflow\n"
        "print(mlflow.__file__, 'step' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    mlflow_file, step_loaded = completed.stdout.split()[-2:]
    assert "site-packages" in mlflow_file and step_loaded == "False"
