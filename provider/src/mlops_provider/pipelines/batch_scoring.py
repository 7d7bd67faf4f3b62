"""Batch scoring: score a table with the model's champion (or a given version) in chunks.

``score_batch`` runs ``mlops-step score-batch`` (include/mlops_steps/scoring/batch.py) for this
DAG's model and the run's logical date: it checks the input's columns against the contract
(missing, extra or mistyped columns fail the run without retrying and write nothing), loads the
version once, and writes Parquet parts (the row's id, the model version, the task's outputs)
and a manifest with each part's rows and sha256 under ``<output>/run=<logical date>/``, with an
MLflow run in ``<model>-batch-scoring`` for lineage. The run's directory appears only complete,
so re-running a logical date that finished replaces nothing and returns its manifest.

Triggered from the form (input, output, alias or version, rows per chunk) or on a cron when
``MLOPS_BATCH_SCORING_SCHEDULE`` (or the contract's ``schedules.batch_scoring``) sets one; the
input then comes from ``MLOPS_BATCH_SCORING_INPUT``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.operators.step import PARTITION_KEY, STEP_MACROS, pipeline_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_provider.pipelines.models import ModelPipeline, policy
from mlops_steps.core.options import from_env
from mlops_steps.core.policies import BatchScoringPolicy
from mlops_steps.core.settings import ConfigError
from mlops_steps.core.spec import Resources

RUN_TIMEOUT = timedelta(hours=6)
STEP_TIMEOUT = timedelta(hours=5)


def build(pipeline: ModelPipeline) -> DAG:
    """The model's batch scoring DAG (``mlops_batch_scoring__<model>``)."""
    settings = pipeline.settings
    schedules = policy(pipeline, "schedules", settings.schedules)
    defaults = from_env(BatchScoringPolicy, ConfigError)  # the deployment's MLOPS_BATCH_SCORING_*
    with DAG(
        dag_id=pipeline.dag_id("batch_scoring"),
        description=f"Score a table with the {pipeline.model} champion (or a given version).",
        doc_md=__doc__,
        schedule=cron_or_assets(schedules.batch_scoring),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=RUN_TIMEOUT,
        deadline=[
            queued_deadline(
                "batch_scoring_overdue",
                timedelta(hours=4),
                "Batch scoring is not done: is the input table larger than usual, or is MLflow "
                "slow to hand out the model?",
            )
        ],
        tags=pipeline.tags("batch_scoring"),
        user_defined_macros=STEP_MACROS,
        default_args=task_defaults(),
        params=dag_params(BatchScoringPolicy, defaults),
    ) as dag:
        spec = pipeline_step(
            "score_batch",
            "score-batch",
            ("--partition", PARTITION_KEY, *step_args(BatchScoringPolicy)),
            settings=settings,
            # Memory follows the chunk (Param chunk_rows), not the table.
            resources=Resources(cpu="1", memory="2Gi", cpu_limit="2", memory_limit="3Gi"),
            timeout=STEP_TIMEOUT,
        )
        step_operator(spec, settings=settings)
    return dag
