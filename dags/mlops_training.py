"""Training pipeline: ingest -> validate -> train -> evaluate -> gate -> register.

Each task runs one ``mlops-step`` verb (see include/mlops_steps), as a Kubernetes pod or a local
process depending on MLOPS_RUNNER. All logic lives in the step package; this file is wiring only.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param, chain

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import param_deadline
from mlops_provider.operators.step import PARTITION_KEY, STEP_MACROS, pipeline_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_steps.core.policies import GateThresholds, SourceRequest, TrainParams, ValidationPolicy
from mlops_steps.core.settings import get_settings
from mlops_steps.core.spec import Resources

settings = get_settings()
RUN_TIMEOUT = timedelta(hours=3)

# New raw data landed, or monitoring saw drift: either one retrains, on top of the weekly cron.
model = settings.model_name
TRAINING_DATA = Asset(name=f"{model}_training_data", uri=f"mlops://{model}/training-data")
DRIFT_DETECTED = Asset(name=f"{model}_drift_detected", uri=f"mlops://{model}/drift-detected")
# Emitted when a new version gets the `challenger` alias; the deployment pipeline listens to it.
CHALLENGER_REGISTERED = Asset(name=f"{model}_challenger", uri=f"mlops://{model}/challenger")

with DAG(
    dag_id="mlops_training",
    description="Ingest, validate, train, evaluate, gate and register a churn challenger.",
    doc_md=__doc__,
    schedule=cron_or_assets(settings.schedules.training, (TRAINING_DATA | DRIFT_DETECTED)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=RUN_TIMEOUT,
    deadline=[
        param_deadline(
            "training_overdue",
            "deadline_minutes",
            settings.alerts.training_deadline_minutes,
            "Training is late: check the running task's log; the run is stopped at 3 h.",
        )
    ],
    tags=["mlops", "training", settings.model_name],
    user_defined_macros=STEP_MACROS,
    default_args=task_defaults(max_retry_delay=timedelta(minutes=10)),
    params={
        **dag_params(SourceRequest, settings.ingest),
        **dag_params(ValidationPolicy, settings.validation),
        "deadline_minutes": Param(
            settings.alerts.training_deadline_minutes,
            type="number",
            exclusiveMinimum=0,
            maximum=RUN_TIMEOUT.total_seconds() / 60,
            title="Deadline (minutes)",
            description="Alert when the run is not finished this long after it was queued.",
        ),
        **dag_params(GateThresholds, settings.gate),
    },
) as dag:
    partition = ("--partition", PARTITION_KEY)
    ingest = step_operator(
        pipeline_step("ingest", "ingest", (*partition, *step_args(SourceRequest)))
    )
    validate = step_operator(
        pipeline_step("validate", "validate", (*partition, *step_args(ValidationPolicy)))
    )
    train = step_operator(
        pipeline_step(
            "train",
            "train",
            # The ingest seed also seeds LightGBM: one Param for the run's randomness.
            (*partition, *step_args(TrainParams, only=["seed"])),
            resources=Resources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi"),
            timeout=timedelta(hours=2),
        )
    )
    evaluate = step_operator(pipeline_step("evaluate", "evaluate", partition))
    quality_gate = step_operator(
        pipeline_step("gate", "gate", (*partition, *step_args(GateThresholds)))
    )
    register = step_operator(
        pipeline_step("register", "register", partition), outlets=[CHALLENGER_REGISTERED]
    )
    chain(ingest, validate, train, evaluate, quality_gate, register)
