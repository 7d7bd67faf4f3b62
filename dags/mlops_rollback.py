"""Manual rollback: ``previous_champion`` becomes ``champion`` again and takes all traffic.

Triggered by a person from the UI form (a reason is required); it shares the promotion pool with
the deployment DAG, so it never runs in the middle of a release. The demoted version is tagged
``rolled_back`` and the decision goes to the audit ledger. This file is wiring only.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param

from mlops_provider.defaults import task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.operators.step import STEP_MACROS, release_step, step_operator
from mlops_steps.core.settings import get_settings

settings = get_settings()
model = settings.model_name
DEPLOYMENTS = Asset(name=f"{model}_deployments", uri=f"mlops://{model}/deployments")

with DAG(
    dag_id="mlops_rollback",
    description="Restore the previous champion (manual).",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    deadline=[
        queued_deadline(
            "rollback_overdue",
            timedelta(minutes=settings.alerts.rollback_deadline_minutes),
            "The previous champion is not restored yet: is a release holding the promotion pool?",
        )
    ],
    tags=["mlops", "deployment", model],
    user_defined_macros=STEP_MACROS,
    default_args=task_defaults(retry_delay=timedelta(seconds=20)),
    params={
        "reason": Param(
            type="string",
            minLength=5,
            title="Reason",
            description="Why the current champion is rolled back (kept in the ledger).",
        ),
    },
) as dag:
    step_operator(
        release_step(
            "restore_previous_champion",
            "restore",
            (
                "--reason", "{{ params.reason }}",
                "--requested-by", "{{ dag_run.triggering_user_name or 'unknown' }}",
            ),
        ),
        pool=settings.deploy.promotion_pool,
        outlets=[DEPLOYMENTS],
    )  # fmt: skip
