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

    from mlops_steps.core.settings import get_settings

    monkeypatch.setenv("MLOPS_RUNNER", runner)
    get_settings.cache_clear()
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        get_settings.cache_clear()
    assert bag.import_errors == {}, bag.import_errors
    return dict(bag.dags)


#: What upstream tasks of the deployment DAG return, for templates that pull them.
XCOMS: dict[str, Any] = {
    "resolve": {
        "model_name": "churn",
        "version": "7",
        "champion_version": "6",
        "partition": "20261116T000000",
        "metrics": {},
        "links": {},
    },
    "build_image": {
        "image_ref": "ghcr.io/airflow-mlops/serving:v7-0123456789ab",
        "bundle_path": None,
    },
    "approve": {"approved": True, "responded_by": "alice"},
}


#: Values for Params that have no default (a person fills them in the trigger form).
REQUIRED_PARAMS = {"reason": "a rendering test"}


def _xcom_pull(task_ids: str | None = None, **_: Any) -> Any:
    return XCOMS[task_ids] if task_ids is not None else None


def for_dag_test(dag: Any) -> Any:
    """The DAG ready for ``dag.test()``: its DeadlineAlerts off (an Airflow 3.3.2 bug crashes a
    successful dag.test() run of a DAG with deadlines; see scripts/dag_test.py)."""
    from dag_test import without_deadlines

    return without_deadlines(dag)


def render_context(dag: Any, task_id: str) -> dict[str, Any]:
    """The parts of a task's context the step templates use."""
    logical_date = pendulum.datetime(2026, 11, 16, tz="UTC")
    ti = SimpleNamespace(
        dag_id=dag.dag_id,
        task_id=task_id,
        run_id=RUN_ID,
        map_index=-1,
        try_number=1,
        xcom_pull=_xcom_pull,
    )
    return {
        "dag": dag,
        "ti": ti,
        "task_instance": ti,
        "run_id": RUN_ID,
        "dag_run": SimpleNamespace(
            logical_date=logical_date, run_after=logical_date, triggering_user_name="alice"
        ),
        "params": {
            name: REQUIRED_PARAMS.get(
                name, dag.params.get_param(name).resolve(suppress_exception=True)
            )
            for name in dag.params
        },
    }


def rendered(task: Any) -> Any:
    task.render_template_fields(render_context(task.dag, task.task_id))
    return task


CHURN_CONTRACT = REPO / "models" / "churn.yaml"


def write_models(directory: Path, names: list[str], *, extra: str = "") -> Path:
    """A models directory holding churn's contract under each of ``names`` (``extra``: YAML
    appended to every copy but churn's), for factory tests and the parse benchmark."""
    directory.mkdir(parents=True, exist_ok=True)
    text = CHURN_CONTRACT.read_text()
    for name in names:
        body = text.replace("name: churn\n", f"name: {name}\n", 1)
        (directory / f"{name}.yaml").write_text(body + (extra if name != "churn" else ""))
    return directory


def task_states(run: Any) -> dict[str, str]:
    """Each task of a ``dag.test()`` run and its state."""
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def return_value(run: Any, task_id: str) -> Any:
    """What ``task_id`` returned in a ``dag.test()`` run, read back from Airflow's database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == "return_value",
            )
        ).one()
        return XComModel.deserialize_value(row)
