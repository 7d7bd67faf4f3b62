"""Monitoring: every hour, judge the last window of served predictions against the champion.

``monitor`` runs ``mlops-step monitor`` (include/mlops_steps/monitoring/monitor.py) on the window
that ends at the run's logical date; the cron fires at :15 so the service's last flushes have
landed. It compares the champion's served rows with the champion's own training data: data drift per
feature (Evidently), drift of the served scores, and AUC/accuracy where delayed labels arrived. It
is skipped while no version is champion, and fails without retrying when the window cannot be judged
(no or too few rows, a missing, extra, mistyped or null feature): drift is never reported as absent
for data nobody looked at.

When drift or degradation crosses the thresholds, ``announce_drift`` emits an asset event on
``mlops://<model>/drift-detected``, which schedules the training DAG; its extra carries the
report, the drifted columns, the window and the champion version. Otherwise that task is skipped
and nothing is emitted. This file is wiring only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.operators.step import STEP_MACROS, pipeline_step, step_operator
from mlops_steps.core.settings import get_settings
from mlops_steps.core.spec import Resources

settings = get_settings()
model = settings.model_name

# The training DAG is scheduled on this asset (same name and URI).
DRIFT_DETECTED = Asset(name=f"{model}_drift_detected", uri=f"mlops://{model}/drift-detected")
WINDOW_END = "{{ (dag_run.logical_date or dag_run.run_after).isoformat() }}"
RUN_TIMEOUT = timedelta(minutes=50)  # before the next hourly run is due

# Evidently 0.7 stattest names (tests/dags/test_monitoring_dag_shape.py checks them against its
# registry); "auto" lets Evidently choose per column (Wasserstein / Jensen-Shannon above 1,000
# reference rows).
NUM_METHODS = ["auto", "wasserstein", "ks", "psi", "jensenshannon", "kl_div", "hellinger", "ed",
               "cramer_von_mises", "anderson", "mannw"]  # fmt: skip
CAT_METHODS = ["auto", "jensenshannon", "psi", "kl_div", "hellinger", "chisquare", "TVD"]
SCORE_METHODS = [m for m in NUM_METHODS if m != "auto"]


def _or_auto(param: str) -> str:
    return f"{{{{ params.{param} if params.{param} is not none else 'auto' }}}}"


with DAG(
    dag_id="mlops_monitoring",
    description="Hourly drift and performance check of the serving champion.",
    doc_md=__doc__,
    schedule=cron_or_assets(settings.schedules.monitoring),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=RUN_TIMEOUT,
    deadline=[
        queued_deadline(
            "monitoring_overdue",
            timedelta(minutes=40),
            "Monitoring of this hour is not done: is the prediction log slow to read, or MLflow?",
        )
    ],
    tags=["mlops", "monitoring", model],
    user_defined_macros=STEP_MACROS,
    default_args=task_defaults(),
    params={
        "window_hours": Param(
            1,
            type="number",
            exclusiveMinimum=0,
            maximum=168,
            title="Window (hours)",
            description="Predictions served in this many hours before the run's logical date.",
        ),
        "min_rows": Param(
            200,
            type="integer",
            minimum=1,
            title="Minimum champion rows",
            description="Fewer fail the run: too little traffic is never reported as no drift.",
        ),
        "num_stattest": Param(
            "auto", type="string", enum=NUM_METHODS, title="Drift test for numeric features"
        ),
        "cat_stattest": Param(
            "auto", type="string", enum=CAT_METHODS, title="Drift test for categorical features"
        ),
        "stattest_threshold": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            title="Drift test threshold",
            description="Empty: the method's own (0.1 for distances, 0.05 for p-values).",
        ),
        "drift_share": Param(
            0.1,
            type="number",
            minimum=0,
            maximum=1,
            title="Share of drifted features that is dataset drift",
        ),
        "prediction_stattest": Param(
            "psi", type="string", enum=SCORE_METHODS, title="Drift test for the served scores"
        ),
        "prediction_threshold": Param(
            None, type=["null", "number"], exclusiveMinimum=0, title="Score drift threshold"
        ),
        "max_auc_drop": Param(
            0.05, type="number", minimum=0, maximum=1, title="Max AUC drop on labelled traffic"
        ),
        "max_accuracy_drop": Param(
            0.05, type="number", minimum=0, maximum=1, title="Max accuracy drop"
        ),
    },
) as dag:
    monitor = step_operator(
        pipeline_step(
            "monitor",
            "monitor",
            (
                "--until", WINDOW_END,
                "--window-hours", "{{ params.window_hours }}",
                "--min-rows", "{{ params.min_rows }}",
                "--num-stattest", "{{ params.num_stattest }}",
                "--cat-stattest", "{{ params.cat_stattest }}",
                "--stattest-threshold", _or_auto("stattest_threshold"),
                "--drift-share", "{{ params.drift_share }}",
                "--prediction-stattest", "{{ params.prediction_stattest }}",
                "--prediction-threshold", _or_auto("prediction_threshold"),
                "--max-auc-drop", "{{ params.max_auc_drop }}",
                "--max-accuracy-drop", "{{ params.max_accuracy_drop }}",
            ),
            env={
                "MLOPS_PREDICTION_LOG": settings.prediction_log,
                "MLOPS_MONITORING_EXPERIMENT": settings.monitoring_experiment,
            },
            resources=Resources(cpu="1", memory="2Gi", cpu_limit="2", memory_limit="4Gi"),
            timeout=timedelta(minutes=30),
        )
    )  # fmt: skip

    @task(outlets=[DRIFT_DETECTED], execution_timeout=timedelta(minutes=5))
    def announce_drift(result: Any, *, outlet_events: Any = None) -> Any:
        """Emit the drift event with the monitor's summary as its extra, only on drift
        (``result`` is the monitor's XCom; a skipped monitor skips this task too)."""
        if not result or not result.get("drift_detected"):
            raise AirflowSkipException("no drift or degradation beyond the thresholds")
        outlet_events[DRIFT_DETECTED].extra = result["asset_extra"]
        return result["asset_extra"]

    announce_drift(monitor.output)
