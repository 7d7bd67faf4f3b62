"""Deployment: release candidate -> approval -> image -> canary steps, each analysed -> promote or
roll back.

Runs only for real candidates: the DAG schedules on the model's ``release-candidate`` asset, which
gets one event per version that becomes a new, READY, undecided ``challenger`` -- from the MLflow
webhook bridge (fast path) or from the asset's registry watcher in the triggerer (every
``MLOPS_REGISTRY_POLL_INTERVAL_S``; a lost webhook costs two polls), whichever claims the version
first (mlops_provider/triggers/candidates.py). The promotion's own ``champion`` move starts no
run. The first task checks the candidate once and skips the run when it is gone. With the
explicit fallback (``waiting_runs_fallback``) the DAG also wakes on every registry event, the
training DAG's challenger asset and the reconciliation cron, and the first task waits (deferred)
up to ``MLOPS_CANDIDATE_WAIT_S``. ``canary`` puts the candidate in at its first position (a shadow
phase when ``shadow_share`` is set, else the first of ``canary_steps``); ``analyze_canary`` walks
the shadow phase and every step below 100 %, judging each (release/progressive.py); ``promote`` is
the final 100 %. Every release step is one ``mlops-step`` verb (see
include/mlops_steps); the canary, analysis, promotion and rollback share the model's one-slot pool
(``mlops_promotion__<model>``), so its releases never interleave. Either the candidate ends up
``champion`` at 100 % of traffic, or traffic and aliases are as they were and the candidate is
tagged with the reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, Param, chain

from mlops_provider.defaults import cron_or_assets, task_defaults
from mlops_provider.notifications.deadlines import queued_deadline
from mlops_provider.notifications.notifier import approval_notifier
from mlops_provider.operators.approval import CandidateApprovalOperator
from mlops_provider.operators.outcome import ReleaseRolledBackOperator, skip_unless_attempted
from mlops_provider.operators.step import STEP_MACROS, release_step, step_operator
from mlops_provider.params import dag_params, step_args
from mlops_provider.pipelines.models import ModelPipeline, policy, trigger_params
from mlops_provider.sensors.registry import MlflowModelVersionSensor
from mlops_provider.triggers.candidates import (
    CANDIDATE_ALIAS,
    DECISION_TAG,
    MlflowReleaseCandidateTrigger,
)
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.options import cross_checked
from mlops_steps.core.policies import AnalysisPolicy, CanaryPolicy

# The analysis settings a trigger may change; the others are the deployment's choice.
ANALYSIS_PARAMS = trigger_params(
    AnalysisPolicy,
    leave_out={
        "min_accuracy": "a first release is judged against the gate's minimum",
        "reference_set": "the golden set is the deployment's (MLOPS_ANALYSIS_REFERENCE_SET)",
        "first_release": "the deployment's (MLOPS_ANALYSIS_FIRST_RELEASE)",
    },
)

CANDIDATE = "ti.xcom_pull(task_ids='resolve')"
IMAGE = "ti.xcom_pull(task_ids='build_image')"
APPROVAL = "ti.xcom_pull(task_ids='approve', key='decision')"
VERSION = ("--version", f"{{{{ {CANDIDATE}['version'] }}}}")
RELEASE = (
    "--image-ref", f"{{{{ {IMAGE}['image_ref'] }}}}",
    "--bundle-path", f"{{{{ {IMAGE}['bundle_path'] or '' }}}}",
)  # fmt: skip
#: How the approval page names a metric.
METRIC_LABELS = {"auc": "AUC", "log_loss": "log loss", "f1": "F1", "macro_f1": "macro F1",
                 "rmse": "RMSE", "mae": "MAE", "r2": "R²"}  # fmt: skip

APPROVAL_HEAD = """\
{% set c = ti.xcom_pull(task_ids='resolve') %}
**{{ c['model_name'] }} v{{ c['version'] }}** replaces champion
v{{ c['champion_version'] or '(none yet)' }}.

| hold-out metric | value |
|---|---|
"""
# A model trained on served traffic: the primary metric on both hold-outs, challenger against
# champion with the paired bootstrap interval of the delta (from the resolve step's holdouts).
APPROVAL_HOLDOUTS = """\
{%- macro n(v, f='%.4f') %}{{ f | format(v) if v is not none else 'n/a' }}{% endmacro %}
{%- macro row(name, x) -%}
| {{ name }} | {{ x['rows'] if x['rows'] is not none else 'n/a' }} | {{ n(x['challenger']) }} \
| {{ n(x['champion']) }} | {{ n(x['delta'], '%+.4f') }} \
[{{ n(x['ci_low'], '%+.4f') }}, {{ n(x['ci_high'], '%+.4f') }}] |
{%- endmacro %}
{%- set h = c.get('holdouts') %}{% if h %}

Trained on served traffic ({{ h['served_window'] }}); __METRIC__ on two hold-outs
(delta = challenger - champion, 95 % paired bootstrap interval):

| hold-out | rows | v{{ c['version'] }} | champion v{{ c['champion_version'] or '(none)' }} \
| delta [95 % CI] |
|---|---|---|---|---|
{{ row('recent traffic (where the drift is)', h['recent']) }}
{{ row('reference: partition ' ~ h['reference']['partition'] ~ ' (must not forget)', \
h['reference']) }}
{% endif %}
"""
APPROVAL_TAIL = """\

Gate: {{ c['gate_reason'] }} (report: {{ c['links'].get('gate_report') or 'n/a' }})

Data vs the champion's training data: {{ c['shift']['summary'] }}
(report: {{ c['links'].get('shift_report') or c['shift']['report'] }})

Data sha256 `{{ c['data_sha256'] }}` (partition {{ c['partition'] }}).
MLflow run: {{ c['links']['mlflow_run'] }} · Data Docs: {{ c['links']['data_docs'] }}

Approve to build the image and release it in steps of {{ params.canary_steps }} % of the
traffic{% if params.shadow_share %}, after a shadow phase on
{{ (params.shadow_share * 100) | round(1) }} % of the requests{% endif %}, judged at every step.
No answer within the response timeout counts as Reject.
"""


def _metric(key: str) -> str:
    return f"{{{{ c['metrics'].get('{key}', 'n/a') }}}}"


def approval_body(contract: ModelContract) -> str:
    """The approval page: the task's hold-out metrics (primary first), the latency and the
    primary metric's change against the champion, from the resolve step's candidate; for a
    model trained on served traffic, the primary metric on both hold-outs with their CIs."""
    primary = contract.primary_metric
    names = [primary, *(m for m in contract.metrics if m != primary)]
    # .get: a metric the version's tags lack shows as n/a (templates are strict: a missing key
    # would fail the approval task).
    rows = [f"| {METRIC_LABELS.get(m, m)} | {_metric(f'holdout_{m}')} |" for m in names]
    rows += [
        f"| p95 latency (ms/row) | {_metric('latency_p95_ms')} |",
        f"| {METRIC_LABELS.get(primary, primary)} vs champion | "
        f"{_metric(f'{primary}_delta_vs_champion')} |",
    ]
    holdouts = APPROVAL_HOLDOUTS.replace("__METRIC__", METRIC_LABELS.get(primary, primary))
    return APPROVAL_HEAD + "\n".join(rows) + "\n" + holdouts + APPROVAL_TAIL


def release_candidates(pipeline: ModelPipeline) -> Asset:
    """The model's ``release-candidate`` asset, watched in the triggerer by the registry
    trigger; the webhook bridge feeds the same asset (and shares the trigger's claims)."""
    plain = pipeline.asset("release-candidate")
    trigger = MlflowReleaseCandidateTrigger(
        pipeline.model,
        mlflow_conn_id=pipeline.settings.mlflow_conn_id,
        poll_interval=pipeline.settings.deploy.registry_poll_interval_s,
    )
    watcher = AssetWatcher(name=f"{pipeline.model}_registry_watcher", trigger=trigger)
    return Asset(name=plain.name, uri=plain.uri, watchers=[watcher])


def schedule_and_wait(pipeline: ModelPipeline) -> tuple[Any, float]:
    """The DAG's schedule and how long its first task waits for a candidate: the candidate
    asset and no wait, or (explicit fallback) today's every-registry-event + cron + wait too."""
    deploy = pipeline.settings.deploy
    candidates = release_candidates(pipeline)
    if not deploy.waiting_runs_fallback:
        return [candidates], 0.0
    schedules = policy(pipeline, "schedules", pipeline.settings.schedules)
    every_event = pipeline.asset("challenger") | pipeline.asset("registry-event") | candidates
    return cron_or_assets(schedules.deployment_reconcile, every_event), deploy.candidate_wait_s


def build(pipeline: ModelPipeline) -> DAG:
    """The model's deployment DAG (``mlops_deployment__<model>``)."""
    settings, model = pipeline.settings, pipeline.model
    deploy = settings.deploy
    pool = deploy.promotion_pool
    run_timeout = timedelta(hours=deploy.approval_timeout_hours + 2)
    deployments = pipeline.asset("deployments")
    schedule, candidate_wait_s = schedule_and_wait(pipeline)

    def release(task_id: str, verb: str, args: tuple[str, ...], **kwargs: Any) -> Any:
        spec_fields = {k: kwargs.pop(k) for k in ("timeout", "uses_kubernetes_api") if k in kwargs}
        spec = release_step(task_id, verb, args, settings=settings, **spec_fields)
        return step_operator(spec, settings=settings, **kwargs)

    with DAG(
        dag_id=pipeline.dag_id("deployment"),
        description=f"Approve, canary, analyse and promote (or roll back) the {model} challenger.",
        doc_md=__doc__,
        schedule=schedule,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=run_timeout,
        deadline=[
            queued_deadline(
                "approval_overdue",
                timedelta(
                    seconds=candidate_wait_s,
                    hours=settings.alerts.approval_deadline_hours,
                ),
                f"The release approval may still be waiting: answer it (no answer by "
                f"{deploy.approval_timeout_hours:g} h counts as Reject).",
                action_task_id="approve",
            ),
            queued_deadline(
                "release_overdue",
                run_timeout - timedelta(minutes=15),
                "The release is stopped by its run timeout within 15 minutes: check the canary.",
            ),
        ],
        tags=pipeline.tags("deployment"),
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
            **dag_params(CanaryPolicy, policy(pipeline, "canary", settings.canary)),
            **dag_params(
                AnalysisPolicy,
                policy(pipeline, "canary", settings.analysis),
                only=ANALYSIS_PARAMS,
            ),
        },
    ) as dag:
        wait_for_candidate = MlflowModelVersionSensor(
            task_id="wait_for_candidate",
            mlflow_conn_id=settings.mlflow_conn_id,
            model_name=model,
            alias=CANDIDATE_ALIAS,
            version="{{ params.version }}",
            tag_absent=DECISION_TAG,
            # No wait (the default): the event that started the run was a claimed candidate, so
            # one check finds it; the fallback's wait is deferred to the triggerer.
            deferrable=candidate_wait_s > 0,
            poke_interval=15,
            timeout=candidate_wait_s,
            soft_fail=True,
            retries=0,
        )
        # The analysis Params' cross check (core/policies/) refuses a run here, first.
        resolve = release(
            "resolve",
            "resolve",
            (
                "--version", "{{ params.version }}",
                *step_args(AnalysisPolicy, only=cross_checked(AnalysisPolicy)),
                *step_args(CanaryPolicy),
            ),
            uses_kubernetes_api=False,
        )  # fmt: skip
        approve = CandidateApprovalOperator(
            task_id="approve",
            subject=f"Deploy {model} v{{{{ {CANDIDATE}['version'] }}}} to production?",
            body=approval_body(pipeline.contract),
            require_approval="{{ params.require_approval }}",
            # A needs_review candidate is never auto-approved; its page opens with the reason.
            review_reason=f"{{{{ {CANDIDATE}['review_reason'] or '' }}}}",
            reject_task_id="reject",
            response_timeout=timedelta(hours=deploy.approval_timeout_hours),
            notifiers=[approval_notifier()],
            retries=0,
        )
        reject = release(
            "reject",
            "rollback",
            (
                *VERSION,
                "--status", "rejected",
                "--reason", f"rejected at approval by {{{{ {APPROVAL}['responded_by'] }}}}",
                "--approved-by", f"{{{{ {APPROVAL}['responded_by'] }}}}",
            ),
            outlets=[deployments],
        )  # fmt: skip
        build_image = release("build_image", "build-image", VERSION)
        canary = release(
            "canary", "canary", (*VERSION, *RELEASE, *step_args(CanaryPolicy)), pool=pool
        )
        analyze = release(
            "analyze_canary",
            "analyze",
            (
                *VERSION,
                *RELEASE,
                # The candidate's own partition, which the analysis never replays.
                "--data-partition", f"{{{{ {CANDIDATE}['partition'] }}}}",
                *step_args(AnalysisPolicy, only=ANALYSIS_PARAMS),
                *step_args(CanaryPolicy),
            ),
            timeout=timedelta(hours=2),
            pool=pool,
        )  # fmt: skip
        promote = release(
            "promote",
            "promote",
            (
                *VERSION,
                *RELEASE,
                "--expected-champion", f"{{{{ {CANDIDATE}['champion_version'] or '' }}}}",
                "--approved-by", f"{{{{ {APPROVAL}['responded_by'] }}}}",
            ),
            pool=pool,
            outlets=[deployments],
        )  # fmt: skip
        rollback = release(
            "rollback",
            "rollback",
            (
                # Rendered before the skip check below, so it must render without a candidate.
                "--version", f"{{{{ ({CANDIDATE} or {{}}).get('version', '') }}}}",
                "--status", "rejected",
                "--reason", "the canary release failed (see the analysis and task logs)",
                "--approved-by", f"{{{{ ({APPROVAL} or {{}}).get('responded_by', '') }}}}",
            ),
            pool=pool,
            trigger_rule="one_failed",
            # one_failed also fires on upstream failures (resolve, approve): nothing was released.
            pre_execute=skip_unless_attempted("canary"),
            outlets=[deployments],
        )  # fmt: skip
        rolled_back = ReleaseRolledBackOperator(
            task_id="release_rolled_back",
            message=(
                f"v{{{{ {CANDIDATE}['version'] }}}} was rolled back; traffic and aliases are as "
                "they were. See analyze_canary and the ledger for why."
            ),
        )

        chain(wait_for_candidate, resolve, approve, [build_image, reject])
        chain(build_image, canary, analyze, promote)
        [canary, analyze, promote] >> rollback >> rolled_back
    return dag
