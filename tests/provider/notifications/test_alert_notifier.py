"""Where alerts come from: the notifier in task callbacks and approvals, and the deadline
callback the triggerer awaits; each builds one record (checked in the file channel)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlops_provider.notifications.alerts import task_alert
from mlops_provider.notifications.callbacks import deadline_missed
from mlops_provider.notifications.notifier import MlopsNotifier
from tests.provider.notifications.conftest import RUN_ID, alert_records


def _task_context(task_id: str, error: BaseException | None = None, **task: Any) -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="mlops_deployment__churn",
        task_id=task_id,
        run_id=RUN_ID,
        map_index=-1,
        try_number=1,
        log_url=f"http://airflow.test/dags/mlops_deployment__churn/runs/x/tasks/{task_id}?try_number=1",
    )
    task_ = SimpleNamespace(task_id=task_id, **task)
    return {"ti": ti, "task_instance": ti, "run_id": RUN_ID, "exception": error, "task": task_}


def test_one_notifier_instance_renders_each_call_on_its_own(alerts_env: Path) -> None:
    """default_args share one instance between all tasks of a DAG."""
    notifier = MlopsNotifier(kind="task_failed", message="{{ ti.task_id }} broke")
    notifier(_task_context("canary", RuntimeError("x")))
    notifier(_task_context("promote", RuntimeError("y")))
    first, second = alert_records(alerts_env)
    assert (first["message"], second["message"]) == ("canary broke", "promote broke")
    assert notifier.message == "{{ ti.task_id }} broke"


def test_failure_alert_from_a_task_context(alerts_env: Path) -> None:
    MlopsNotifier(kind="task_failed")(_task_context("canary", RuntimeError("pods\nnot ready")))
    (record,) = alert_records(alerts_env)
    assert record["message"] == "canary failed on try 1: RuntimeError: pods"
    assert record["log_url"].endswith("/tasks/canary?try_number=1")
    assert record["details"] == {"error": "RuntimeError: pods"}


def test_approval_alert_links_the_required_actions_page(alerts_env: Path) -> None:
    from datetime import timedelta

    context = _task_context(
        "approve", subject="Deploy churn v7 to production?", response_timeout=timedelta(hours=24)
    )
    alert = task_alert(context, "approval_waiting")
    link = (
        "http://airflow.test/dags/mlops_deployment__churn/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00"
        "/tasks/approve/required_actions"
    )
    assert alert.details == {"required_actions_url": link, "response_timeout": "1 day, 0:00:00"}
    assert alert.message == (
        f"Deploy churn v7 to production? Answer at {link} within 1 day, 0:00:00 "
        "(then the default answer applies)."
    )


def _deadline_context(end_date: str | None, state: str) -> dict[str, Any]:
    return {
        "dag_run": {
            "dag_id": "mlops_deployment__churn",
            "dag_run_id": RUN_ID,
            "state": state,
            "queued_at": "2026-11-16T00:00:00Z",
            "end_date": end_date,
        },
        "deadline": {"id": "d1", "deadline_time": "2026-11-16T04:25:00+00:00"},
    }


def test_deadline_callback_alerts_a_run_that_is_still_going(alerts_env: Path) -> None:
    output = asyncio.run(
        deadline_missed(
            deadline="approval_overdue",
            message="Answer the approval.",
            action_task_id="approve",
            context=_deadline_context(None, "running"),
        )
    )
    (record,) = alert_records(alerts_env)
    assert output == f"deadline approval_overdue: alert {record['alert_id']}: file=sent"
    assert record["kind"] == "deadline_missed" and record["task_id"] is None
    assert record["message"] == (
        f"mlops_deployment__churn run {RUN_ID} did not finish within 4:25:00 of being queued "
        "(state: running). Answer the approval."
    )
    assert record["details"]["required_actions_url"].endswith("/tasks/approve/required_actions")
    assert record["log_url"] == (
        "http://airflow.test/dags/mlops_deployment__churn/runs/manual__2026-11-16T00%3A00%3A00%2B00%3A00"
    )


def test_deadline_callback_is_silent_for_a_run_that_ended_before_it(alerts_env: Path) -> None:
    """Airflow keeps a failed run's deadlines; the failure alert already went out."""
    output = asyncio.run(
        deadline_missed(deadline="x", context=_deadline_context("2026-11-16T01:00:00Z", "failed"))
    )
    assert output == "deadline x: no alert, the run ended before its deadline"
    assert alert_records(alerts_env) == []
