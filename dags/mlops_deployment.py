"""Deployment: registry event -> approval -> image -> canary -> analysis -> promote or roll back.

Wakes when a challenger is registered (the training DAG's asset event, or an MLflow webhook turned
into an asset event by the bridge plugin) and on a reconciliation cron for webhooks that were lost
(every 30 minutes; MLOPS_DEPLOYMENT_RECONCILE_SCHEDULE): the first task waits (deferred) for an
undecided ``challenger`` and skips the run when there is none. Every release step is one
``mlops-step`` verb (see include/mlops_steps); the canary, analysis, promotion and rollback share a
one-slot pool, so releases never interleave. Either the candidate ends up ``champion`` at 100 % of
traffic, or traffic and aliases are as they were and the candidate is tagged with the reason.
This file is wiring only.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Asset, Param, chain

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.notifications.notifier import approval_notifier
from mlops_provider.operators.approval import CandidateApprovalOperator
from mlops_provider.operators.outcome import ReleaseRolledBackOperator, skip_unless_attempted
from mlops_provider.operators.step import STEP_MACROS, release_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_provider.sensors.registry import MlflowModelVersionSensor
from mlops_steps.core.options import cross_checked
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy
from mlops_steps.core.settings import get_settings

settings = get_settings()
model = settings.model_name

CHALLENGER_REGISTERED = Asset(name=f"{model}_challenger", uri=f"mlops://{model}/challenger")
REGISTRY_EVENT = Asset(name=f"{model}_registry_event", uri=f"mlops://{model}/registry-event")
DEPLOYMENTS = Asset(name=f"{model}_deployments", uri=f"mlops://{model}/deployments")
PROMOTION_POOL = settings.deploy.promotion_pool
RUN_TIMEOUT = timedelta(hours=settings.deploy.approval_timeout_hours + 2)
# The analysis settings a trigger may change (the first release's min accuracy is the gate's).
ANALYSIS_PARAMS = [
    "rounds",
    "requests_per_round",
    "interval_s",
    "max_failed_rounds",
    "max_error_rate",
    "max_p99_ms",
    "max_psi",
    "max_accuracy_drop",
]

CANDIDATE = "ti.xcom_pull(task_ids='resolve')"
IMAGE = "ti.xcom_pull(task_ids='build_image')"
APPROVAL = "ti.xcom_pull(task_ids='approve', key='decision')"
VERSION = ("--version", f"{{{{ {CANDIDATE}['version'] }}}}")
RELEASE = (
    "--image-ref", f"{{{{ {IMAGE}['image_ref'] }}}}",
    "--bundle-path", f"{{{{ {IMAGE}['bundle_path'] or '' }}}}",
)  # fmt: skip

APPROVAL_BODY = """\
{% set c = ti.xcom_pull(task_ids='resolve') %}
**{{ c['model_name'] }} v{{ c['version'] }}** replaces champion
v{{ c['champion_version'] or '(none yet)' }}.

| hold-out metric | value |
|---|---|
| AUC | {{ c['metrics']['holdout_auc'] }} |
| accuracy | {{ c['metrics']['holdout_accuracy'] }} |
| p95 latency (ms/row) | {{ c['metrics']['latency_p95_ms'] }} |
| AUC vs champion | {{ c['metrics']['auc_delta_vs_champion'] }} |

Gate: {{ c['gate_reason'] }}

Data vs the champion's training data: {{ c['shift']['summary'] }}
(report: {{ c['shift']['report'] }})

Data sha256 `{{ c['data_sha256'] }}` (partition {{ c['partition'] }}).
MLflow run: {{ c['links']['mlflow_run'] }} · Data Docs: {{ c['links']['data_docs'] }}

Approve to build the image and start a {{ (params.canary_weight * 100) | round(1) }} % canary.
No answer within the response timeout counts as Reject.
"""

with DAG(
    dag_id="mlops_deployment",
    description="Approve, canary, analyse and promote (or roll back) the churn challenger.",
    doc_md=__doc__,
    schedule=cron_or_assets(
        settings.schedules.deployment_reconcile, (CHALLENGER_REGISTERED | REGISTRY_EVENT)
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=RUN_TIMEOUT,
    deadline=[
        queued_deadline(
            "approval_overdue",
            timedelta(
                seconds=settings.deploy.candidate_wait_s,
                hours=settings.alerts.approval_deadline_hours,
            ),
            f"The release approval may still be waiting: answer it (no answer by "
            f"{settings.deploy.approval_timeout_hours:g} h counts as Reject).",
            action_task_id="approve",
        ),
        queued_deadline(
            "release_overdue",
            RUN_TIMEOUT - timedelta(minutes=15),
            "The release is stopped by its run timeout within 15 minutes: check the canary.",
        ),
    ],
    tags=["mlops", "deployment", model],
    user_defined_macros=STEP_MACROS,
    default_args=task_defaults(retry_delay=timedelta(seconds=20)),
    params={
        "version": Param(
            "",
            type="string",
            pattern="^[0-9]*$",
            title="Model version",
            description="Deploy this version; empty = the version with the alias `challenger`.",
        ),
        "require_approval": Param(
            True,
            type="boolean",
            title="Require human approval",
            description="Switch off only for non-production targets.",
        ),
        **dag_params(CanaryPolicy, settings.canary),
        **dag_params(AnalysisPolicy, settings.analysis, only=ANALYSIS_PARAMS),
    },
) as dag:
    wait_for_candidate = MlflowModelVersionSensor(
        task_id="wait_for_candidate",
        mlflow_conn_id=settings.mlflow_conn_id,
        model_name=model,
        alias="challenger",
        version="{{ params.version }}",
        tag_absent="mlops.deploy.status",
        deferrable=True,
        poke_interval=15,
        timeout=settings.deploy.candidate_wait_s,
        soft_fail=True,
        retries=0,
    )
    resolve = step_operator(
        release_step(
            "resolve",
            "resolve",
            # The analysis Params' cross check (core/policies.py) refuses a run here, first.
            (
                "--version", "{{ params.version }}",
                *step_args(AnalysisPolicy, only=cross_checked(AnalysisPolicy)),
            ),
            uses_kubernetes_api=False,
        )
    )  # fmt: skip
    approve = CandidateApprovalOperator(
        task_id="approve",
        subject=f"Deploy {model} v{{{{ {CANDIDATE}['version'] }}}} to production?",
        body=APPROVAL_BODY,
        require_approval="{{ params.require_approval }}",
        # A needs_review candidate is never auto-approved; its page opens with the reason.
        review_reason=f"{{{{ {CANDIDATE}['review_reason'] or '' }}}}",
        reject_task_id="reject",
        response_timeout=timedelta(hours=settings.deploy.approval_timeout_hours),
        notifiers=[approval_notifier()],
        retries=0,
    )
    reject = step_operator(
        release_step(
            "reject",
            "rollback",
            (
                *VERSION,
                "--status", "rejected",
                "--reason", f"rejected at approval by {{{{ {APPROVAL}['responded_by'] }}}}",
                "--approved-by", f"{{{{ {APPROVAL}['responded_by'] }}}}",
            ),
        ),
        outlets=[DEPLOYMENTS],
    )  # fmt: skip
    build_image = step_operator(release_step("build_image", "build-image", VERSION))
    canary = step_operator(
        release_step("canary", "canary", (*VERSION, *RELEASE, *step_args(CanaryPolicy))),
        pool=PROMOTION_POOL,
    )
    analyze = step_operator(
        release_step(
            "analyze_canary",
            "analyze",
            (
                *VERSION,
                # The candidate's own partition, which the analysis never replays.
                "--data-partition", f"{{{{ {CANDIDATE}['partition'] }}}}",
                *step_args(AnalysisPolicy, only=ANALYSIS_PARAMS),
            ),
            timeout=timedelta(hours=2),
        ),
        pool=PROMOTION_POOL,
    )  # fmt: skip
    promote = step_operator(
        release_step(
            "promote",
            "promote",
            (
                *VERSION,
                *RELEASE,
                "--expected-champion", f"{{{{ {CANDIDATE}['champion_version'] or '' }}}}",
                "--approved-by", f"{{{{ {APPROVAL}['responded_by'] }}}}",
            ),
        ),
        pool=PROMOTION_POOL,
        outlets=[DEPLOYMENTS],
    )  # fmt: skip
    rollback = step_operator(
        release_step(
            "rollback",
            "rollback",
            (
                # Rendered before the skip check below, so it must render without a candidate.
                "--version", f"{{{{ ({CANDIDATE} or {{}}).get('version', '') }}}}",
                "--status", "rejected",
                "--reason", "the canary release failed (see the analysis and task logs)",
                "--approved-by", f"{{{{ ({APPROVAL} or {{}}).get('responded_by', '') }}}}",
            ),
        ),
        pool=PROMOTION_POOL,
        trigger_rule="one_failed",
        # one_failed also fires on upstream failures (resolve, approve): nothing was released.
        pre_execute=skip_unless_attempted("canary"),
        outlets=[DEPLOYMENTS],
    )  # fmt: skip

    rolled_back = ReleaseRolledBackOperator(
        task_id="release_rolled_back",
        message=(
            f"v{{{{ {CANDIDATE}['version'] }}}} was rolled back; traffic and aliases are as they "
            "were. See analyze_canary and the ledger for why."
        ),
    )

    chain(wait_for_candidate, resolve, approve, [build_image, reject])
    chain(build_image, canary, analyze, promote)
    [canary, analyze, promote] >> rollback >> rolled_back
