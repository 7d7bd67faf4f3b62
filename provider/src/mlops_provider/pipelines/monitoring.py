"""Monitoring: every hour, judge the last window of served predictions against the champion.

``monitor`` runs ``mlops-step monitor`` (include/mlops_steps/monitoring/monitor.py) for this DAG's
model on the window that ends at the run's logical date; the cron fires at :15 so the service's
last flushes have landed. It compares the champion's served rows with the champion's own training
data: data drift per feature (Evidently), drift of the served predictions, and the task's metrics
where delayed labels arrived. It is skipped while no version is champion, and fails without
retrying when the window cannot be judged (no or too few rows, a missing, extra, mistyped or null
feature): drift is never reported as absent for data nobody looked at.

When drift or degradation crosses the thresholds (the settings' with the contract's
``monitoring`` overrides), ``announce_drift`` emits an asset event on
``mlops://<model>/drift-detected``, which schedules the model's training DAG; its extra carries
the report, the drifted columns, the window and the champion version. Otherwise that task is
skipped and nothing is emitted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.operators.step import STEP_MACROS, pipeline_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_provider.pipelines.models import ModelPipeline, policy, trigger_params
from mlops_steps.core.policies import DriftPolicy, PerformancePolicy, ServedWindowPolicy
from mlops_steps.core.spec import Resources

WINDOW_END = "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}"
RUN_TIMEOUT = timedelta(minutes=50)  # before the next hourly run is due
# What a trigger may change (per-column methods and the null share stay command-line matters).
WINDOW_PARAMS = ["window_hours", "min_rows"]
PERFORMANCE_PARAMS = trigger_params(
    PerformancePolicy, leave_out={"min_labeled_rows": "a command-line matter"}
)
DRIFT_PARAMS = [
    "num_stattest",
    "cat_stattest",
    "threshold",
    "drift_share",
    "prediction_stattest",
    "prediction_threshold",
]


def build(pipeline: ModelPipeline) -> DAG:
    """The model's monitoring DAG (``mlops_monitoring__<model>``)."""
    settings = pipeline.settings
    drift_detected = pipeline.asset("drift-detected")
    schedules = policy(pipeline, "schedules", settings.schedules)
    with DAG(
        dag_id=pipeline.dag_id("monitoring"),
        description=f"Hourly drift and performance check of the serving {pipeline.model} champion.",
        doc_md=__doc__,
        schedule=cron_or_assets(schedules.monitoring),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=RUN_TIMEOUT,
        deadline=[
            queued_deadline(
                "monitoring_overdue",
                timedelta(minutes=40),
                "Monitoring of this hour is not done: is the prediction log slow to read, or "
                "MLflow?",
            )
        ],
        tags=pipeline.tags("monitoring"),
        user_defined_macros=STEP_MACROS,
        default_args=task_defaults(),
        params={
            **dag_params(
                ServedWindowPolicy,
                policy(pipeline, "monitoring", settings.served_window),
                only=WINDOW_PARAMS,
            ),
            **dag_params(
                DriftPolicy, policy(pipeline, "monitoring", settings.drift), only=DRIFT_PARAMS
            ),
            **dag_params(
                PerformancePolicy,
                policy(pipeline, "monitoring", settings.performance),
                only=PERFORMANCE_PARAMS,
            ),
        },
    ) as dag:
        spec = pipeline_step(
            "monitor",
            "monitor",
            (
                "--until", WINDOW_END,
                *step_args(ServedWindowPolicy, only=WINDOW_PARAMS),
                *step_args(DriftPolicy, only=DRIFT_PARAMS),
                *step_args(PerformancePolicy, only=PERFORMANCE_PARAMS),
            ),
            settings=settings,
            env={
                **pipeline.traffic_env(),
                "MLOPS_MONITORING_EXPERIMENT": settings.monitoring_experiment,
            },
            resources=Resources(cpu="1", memory="2Gi", cpu_limit="2", memory_limit="4Gi"),
            timeout=timedelta(minutes=30),
        )  # fmt: skip
        monitor = step_operator(spec, settings=settings)

        @task(outlets=[drift_detected], execution_timeout=timedelta(minutes=5))
        def announce_drift(result: Any, *, outlet_events: Any = None) -> Any:
            """Emit the drift event with the monitor's summary as its extra, only on drift
            (``result`` is the monitor's XCom; a skipped monitor skips this task too)."""
            if not result or not result.get("drift_detected"):
                raise AirflowSkipException("no drift or degradation beyond the thresholds")
            outlet_events[drift_detected].extra = result["asset_extra"]
            return result["asset_extra"]

        announce_drift(monitor.output)
    return dag
