"""The monitoring DAG's wiring: schedule, the asset it emits, its Params and the monitor's argv."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dags.helpers import load_dags, rendered


@pytest.fixture
def dag(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", "http://127.0.0.1:5999")
    return load_dags(monkeypatch, "local")["mlops_monitoring__churn"]


def test_hourly_and_emits_what_the_training_dag_listens_to(
    dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dag.timetable.expression == "15 * * * *"
    assert dag.get_task("announce_drift").upstream_task_ids == {"monitor"}
    (outlet,) = dag.get_task("announce_drift").outlets
    training = load_dags(monkeypatch, "local")["mlops_training__churn"]
    listened = {(a.name, a.uri) for a in training.timetable.asset_condition.objects}
    assert (outlet.name, outlet.uri) in listened
    assert outlet.uri == "mlops://churn/drift-detected"
    assert dag.get_task("monitor").outlets == []  # only a detected drift emits


def test_monitor_argv_renders_the_window_and_thresholds(dag: Any) -> None:
    argv = rendered(dag.get_task("monitor")).arguments
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "monitor"
    assert options["--until"] == "2026-11-16T00:00:00+00:00"
    assert options["--window-hours"] == "1"
    assert options["--num-stattest"] == options["--cat-stattest"] == "auto"
    assert options["--stattest-threshold"] == "auto"
    assert options["--prediction-stattest"] == "psi" and options["--drift-share"] == "0.1"
    env = rendered(dag.get_task("monitor")).env_vars
    assert env["MLOPS_PREDICTION_LOG"].endswith("predictions")
    assert env["MLOPS_MONITORING_EXPERIMENT"] == "churn-monitoring"


def test_method_choices_are_evidently_stattests(dag: Any) -> None:
    """The trigger form's method lists are literal (parsing must not import Evidently); each
    entry must exist in Evidently's registry for the columns it is offered for."""
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    from evidently.legacy.core import ColumnType

    kinds = {
        "num_stattest": ColumnType.Numerical,
        "cat_stattest": ColumnType.Categorical,
        "prediction_stattest": ColumnType.Numerical,
    }
    for param, kind in kinds.items():
        for name in dag.params.get_param(param).schema["enum"]:
            if name != "auto":
                assert kind in _registered_stat_tests[name], (param, name)
