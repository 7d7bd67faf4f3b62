"""Loading the project's DAGs under a chosen runner, and rendering tasks as a run would."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
RUN_ID = "manual__2026-11-16T00:00:00+00:00"


def load_dags(monkeypatch: pytest.MonkeyPatch, runner: str) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    from mlops_steps.config import get_settings

    monkeypatch.setenv("MLOPS_RUNNER", runner)
    get_settings.cache_clear()
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        get_settings.cache_clear()
    assert bag.import_errors == {}, bag.import_errors
    return dict(bag.dags)


def render_context(dag: Any, task_id: str) -> dict[str, Any]:
    """The parts of a task's context the step templates use."""
    logical_date = pendulum.datetime(2026, 11, 16, tz="UTC")
    ti = SimpleNamespace(
        dag_id=dag.dag_id, task_id=task_id, run_id=RUN_ID, map_index=-1, try_number=1
    )
    return {
        "dag": dag,
        "ti": ti,
        "task_instance": ti,
        "run_id": RUN_ID,
        "dag_run": SimpleNamespace(logical_date=logical_date, run_after=logical_date),
        "params": {name: dag.params[name] for name in dag.params},
    }


def rendered(task: Any) -> Any:
    task.render_template_fields(render_context(task.dag, task.task_id))
    return task
