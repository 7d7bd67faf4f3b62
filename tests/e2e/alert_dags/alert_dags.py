"""Tiny DAGs for the live alerting test (tests/e2e/test_alerts_live.py): a task that fails after
a retry, runs that miss a deadline (built-in and Param-driven), a run that fails before its
deadline, and an approval that waits. Copied into a temporary DAGs folder, never into dags/."""

from __future__ import annotations

import time
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from mlops_provider.notifications.deadlines import before_next_run, param_deadline, queued_deadline
from mlops_provider.notifications.notifier import approval_notifier, task_failure_notifier

START = pendulum.datetime(2026, 1, 1, tz="UTC")
ALERTING = {"on_failure_callback": task_failure_notifier()}


@task
def fail_always() -> None:
    raise RuntimeError("boom (on purpose)")


@task
def sleep_for(seconds: float) -> None:
    time.sleep(seconds)


with DAG(
    "alerts_retry_then_fail",
    schedule=None,
    start_date=START,
    default_args={**ALERTING, "retries": 1, "retry_delay": timedelta(seconds=1)},
    # The run fails long before this deadline; Airflow still "misses" it later, and the
    # callback must not report the failure a second time.
    deadline=[queued_deadline("after_failure", timedelta(seconds=40), "should stay silent")],
):
    fail_always()

with DAG(
    "alerts_queued_deadline",
    schedule=None,
    start_date=START,
    default_args=ALERTING,
    deadline=[queued_deadline("tiny", timedelta(seconds=3), "the tiny test deadline")],
):
    sleep_for(25)

with DAG(
    "alerts_param_deadline",
    schedule=None,
    start_date=START,
    default_args=ALERTING,
    params={"deadline_minutes": Param(60, type="number", exclusiveMinimum=0)},
    deadline=[param_deadline("param", "deadline_minutes", 60, "set by the run's Param")],
):
    sleep_for(25)

with DAG(
    "alerts_next_run_due",
    schedule=None,
    start_date=START,
    default_args=ALERTING,
    deadline=[before_next_run("next_due", timedelta(seconds=3), "the next run is due")],
):
    sleep_for(25)

with DAG("alerts_approval", schedule=None, start_date=START, default_args=ALERTING):
    ApprovalOperator(
        task_id="approve",
        subject="Ship it?",
        notifiers=[approval_notifier()],
        response_timeout=timedelta(seconds=5),
        defaults="Reject",
    )
