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
from mlops_steps.core.settings import get_settings
from mlops_steps.core.spec import Resources

settings = get_settings()
gate = settings.gate
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
        "source_uri": Param(
            "synthetic://churn",
            type="string",
            title="Data source",
            description="synthetic://churn, a path, s3:// or https:// URI of a CSV/Parquet file.",
        ),
        "rows": Param(
            settings.default_rows,
            type="integer",
            minimum=1_000,
            maximum=20_000_000,
            title="Rows (synthetic source)",
        ),
        "seed": Param(settings.default_seed, type="integer", title="Random seed"),
        "drift": Param(
            0.0,
            type="number",
            minimum=0,
            maximum=1,
            title="Injected drift (synthetic source)",
            description="0 = the reference distribution; 1 = strongly shifted and noisier labels.",
        ),
        "min_rows": Param(settings.min_rows, type="integer", minimum=1, title="Minimum rows"),
        "deadline_minutes": Param(
            settings.alerts.training_deadline_minutes,
            type="number",
            exclusiveMinimum=0,
            maximum=RUN_TIMEOUT.total_seconds() / 60,
            title="Deadline (minutes)",
            description="Alert when the run is not finished this long after it was queued.",
        ),
        "min_auc": Param(gate.min_auc, type="number", minimum=0, maximum=1, title="Gate: min AUC"),
        "min_accuracy": Param(
            gate.min_accuracy, type="number", minimum=0, maximum=1, title="Gate: min accuracy"
        ),
        "max_latency_ms": Param(
            gate.max_latency_ms,
            type="number",
            exclusiveMinimum=0,
            title="Gate: max p95 latency per row (ms)",
        ),
        "max_auc_drop": Param(
            gate.max_auc_drop,
            type="number",
            minimum=0,
            maximum=1,
            title="Gate: max AUC drop vs champion",
        ),
    },
) as dag:
    partition = ("--partition", PARTITION_KEY)
    ingest = step_operator(
        pipeline_step(
            "ingest",
            "ingest",
            (
                *partition,
                "--source", "{{ params.source_uri }}",
                "--rows", "{{ params.rows }}",
                "--seed", "{{ params.seed }}",
                "--drift", "{{ params.drift }}",
            ),
        )
    )  # fmt: skip
    validate = step_operator(
        pipeline_step("validate", "validate", (*partition, "--min-rows", "{{ params.min_rows }}"))
    )
    train = step_operator(
        pipeline_step(
            "train",
            "train",
            (*partition, "--seed", "{{ params.seed }}"),
            resources=Resources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi"),
            timeout=timedelta(hours=2),
        )
    )
    evaluate = step_operator(pipeline_step("evaluate", "evaluate", partition))
    quality_gate = step_operator(
        pipeline_step(
            "gate",
            "gate",
            (
                *partition,
                "--min-auc", "{{ params.min_auc }}",
                "--min-accuracy", "{{ params.min_accuracy }}",
                "--max-latency-ms", "{{ params.max_latency_ms }}",
                "--max-auc-drop", "{{ params.max_auc_drop }}",
            ),
        )
    )  # fmt: skip
    register = step_operator(
        pipeline_step("register", "register", partition), outlets=[CHALLENGER_REGISTERED]
    )
    chain(ingest, validate, train, evaluate, quality_gate, register)
