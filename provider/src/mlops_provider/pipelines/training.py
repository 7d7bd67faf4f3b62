"""Training pipeline: ingest -> validate -> train -> evaluate -> gate -> register.

Each task runs one ``mlops-step`` verb (see include/mlops_steps) for this DAG's model, as a
Kubernetes pod or a local process depending on MLOPS_RUNNER. New raw data landed, or monitoring
saw drift: either one retrains, on top of the weekly cron (the contract's ``schedules`` may
change it). The Params' defaults are the deployment's settings with the model's contract on top
(its source, gate checks, training seed and validation overrides).

A run woken by the model's drift event trains on what the service served in the event's window,
joined with the labels that arrived for it and mixed with a share of the champion's training rows
(``training_data`` auto; served: every run, on the last ``served_days``): ingest gets the window
through the ``drift_window`` macro and the run's ``run_after`` as ``--as-of``, so a retry reads
the same labels and builds the same partition.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, chain

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.drift_events import MACRO as DRIFT_WINDOW
from mlops_provider.drift_events import MACROS as DRIFT_MACROS
from mlops_provider.notifications.deadlines import param_deadline
from mlops_provider.operators.step import PARTITION_KEY, STEP_MACROS, pipeline_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_provider.pipelines.models import ModelPipeline, gate_policy, policy
from mlops_steps.core.feedback import ServedDataRequest
from mlops_steps.core.options import from_env
from mlops_steps.core.policies import GateThresholds, SourceRequest, TrainParams, ValidationPolicy
from mlops_steps.core.settings import ConfigError
from mlops_steps.core.spec import Resources

RUN_TIMEOUT = timedelta(hours=3)
#: Empty, or two ISO 8601 times with a slash between (ingest checks them and their order).
SERVED_WINDOW_PATTERN = r"^$|^[0-9]{4}-[^/]+/[0-9]{4}-[^/]+$"
#: When the run was asked for: the cutoff of the labels it reads (the same on every retry).
AS_OF = "{{ dag_run.run_after.isoformat() }}"


def served_window_arg(drift_asset_uri: str) -> str:
    """ingest's ``--served-window``: the window of the drift event that woke the run, else the
    one a person gave (Param ``served_window``), else ''."""
    return (
        f"{{{{ {DRIFT_WINDOW}(triggering_asset_events, {drift_asset_uri!r}) "
        "or params.served_window }}"
    )


def build(pipeline: ModelPipeline) -> DAG:
    """The model's training DAG (``mlops_training__<model>``)."""
    settings, contract = pipeline.settings, pipeline.contract
    training = policy(pipeline, "training", settings.training)
    # The ingest seed also seeds LightGBM: one Param for the run's randomness.
    ingest_defaults = dataclasses.replace(
        settings.ingest, uri=contract.source or settings.ingest.uri, seed=training.seed
    )
    schedules = policy(pipeline, "schedules", settings.schedules)
    challenger, drift_detected = pipeline.asset("challenger"), pipeline.asset("drift-detected")
    with DAG(
        dag_id=pipeline.dag_id("training"),
        description=f"Ingest, validate, train, evaluate, gate and register a {pipeline.model} "
        "challenger.",
        doc_md=__doc__,
        schedule=cron_or_assets(
            schedules.training,
            pipeline.asset("training-data") | drift_detected,
        ),
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
        tags=pipeline.tags("training"),
        user_defined_macros={**STEP_MACROS, **DRIFT_MACROS},
        default_args=task_defaults(max_retry_delay=timedelta(minutes=10)),
        params={
            **dag_params(SourceRequest, ingest_defaults),
            **dag_params(
                ServedDataRequest,
                policy(pipeline, "training", from_env(ServedDataRequest, ConfigError)),
            ),
            "served_window": Param(
                "",
                type="string",
                pattern=SERVED_WINDOW_PATTERN,
                title="Served traffic window (START/END, ISO 8601)",
                description="Learn from the traffic served in this window, e.g. "
                "2026-11-20T00:00:00+00:00/2026-11-21T00:00:00+00:00. Empty: the window of the "
                "drift event that woke the run, else (training_data=served) the last "
                "served_days.",
            ),
            **dag_params(ValidationPolicy, policy(pipeline, "validation", settings.validation)),
            "deadline_minutes": Param(
                settings.alerts.training_deadline_minutes,
                type="number",
                exclusiveMinimum=0,
                maximum=RUN_TIMEOUT.total_seconds() / 60,
                title="Deadline (minutes)",
                description="Alert when the run is not finished this long after it was queued.",
            ),
            **dag_params(GateThresholds, gate_policy(contract, settings.gate)),
        },
    ) as dag:

        def step(task_id: str, args: tuple[str, ...] = (), **spec_fields: Any) -> Any:
            """The task running verb ``task_id`` on the run's partition."""
            operator_kwargs = (
                {"outlets": spec_fields.pop("outlets")} if "outlets" in spec_fields else {}
            )
            spec = pipeline_step(
                task_id, task_id, (*partition, *args), settings=settings, **spec_fields
            )
            return step_operator(spec, settings=settings, **operator_kwargs)

        partition = ("--partition", PARTITION_KEY)
        ingest_args = (
            *step_args(SourceRequest),
            *step_args(ServedDataRequest),
            "--served-window", served_window_arg(drift_detected.uri),
            "--as-of", AS_OF,
        )  # fmt: skip
        chain(
            step("ingest", ingest_args, env=pipeline.traffic_env()),
            step("validate", step_args(ValidationPolicy)),
            step(
                "train",
                step_args(TrainParams, only=["seed"]),
                resources=Resources(cpu="2", memory="4Gi", cpu_limit="4", memory_limit="8Gi"),
                timeout=timedelta(hours=2),
            ),
            step("evaluate"),
            step("gate", step_args(GateThresholds)),
            step("register", outlets=[challenger]),
        )
    return dag
