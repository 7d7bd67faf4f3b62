"""Manual rollback: ``previous_champion`` becomes ``champion`` again and takes all traffic.

Triggered by a person from the UI form (a reason is required); it shares the model's promotion
pool with its deployment DAG, so it never runs in the middle of one of its releases. The demoted
version is tagged ``rolled_back`` and the decision goes to the audit ledger.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from mlops_provider.defaults import task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.operators.step import STEP_MACROS, release_step, step_operator
from mlops_provider.pipelines.models import ModelPipeline


def build(pipeline: ModelPipeline) -> DAG:
    """The model's rollback DAG (``mlops_rollback__<model>``)."""
    settings = pipeline.settings
    with DAG(
        dag_id=pipeline.dag_id("rollback"),
        description=f"Restore the previous {pipeline.model} champion (manual).",
        doc_md=__doc__,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        deadline=[
            queued_deadline(
                "rollback_overdue",
                timedelta(minutes=settings.alerts.rollback_deadline_minutes),
                "The previous champion is not restored yet: is a release holding the promotion "
                "pool?",
            )
        ],
        tags=pipeline.tags("deployment"),
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
        spec = release_step(
            "restore_previous_champion",
            "restore",
            (
                "--reason", "{{ params.reason }}",
                "--requested-by", "{{ dag_run.triggering_user_name or 'unknown' }}",
            ),
            settings=settings,
        )  # fmt: skip
        step_operator(
            spec,
            settings=settings,
            pool=settings.deploy.promotion_pool,
            outlets=[pipeline.asset("deployments")],
        )
    return dag
