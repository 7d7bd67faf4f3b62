"""The parts of the settings that are not step policies: runner, image builds, deployment
target, alerts and schedules, each a frozen dataclass with its defaults (the environment is read
by :func:`mlops_steps.core.settings.load_settings`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RunnerMode = Literal["local", "kubernetes"]
RUNNER_MODES: tuple[RunnerMode, ...] = ("local", "kubernetes")
ImageBuilderKind = Literal["bundle", "ci", "kaniko"]
IMAGE_BUILDERS: tuple[ImageBuilderKind, ...] = ("bundle", "ci", "kaniko")
DeployTargetKind = Literal["service", "kubernetes"]
DEPLOY_TARGETS: tuple[DeployTargetKind, ...] = ("service", "kubernetes")
#: How the Kubernetes target splits traffic: by replica share behind one Service, through an
#: Argo Rollouts ``Rollout``'s canary weight, or through a Gateway API ``HTTPRoute``'s weights.
KubernetesTrafficKind = Literal["replicas", "argo-rollouts", "gateway-api"]
KUBERNETES_TRAFFIC: tuple[KubernetesTrafficKind, ...] = ("replicas", "argo-rollouts", "gateway-api")
#: Where the canary analysis reads the service's counters: each process's ``/metrics`` (scrape)
#: or a Prometheus server that scrapes them (PromQL over its HTTP API).
AnalysisBackend = Literal["scrape", "prometheus"]
ANALYSIS_BACKENDS: tuple[AnalysisBackend, ...] = ("scrape", "prometheus")
#: How far the MLflow client may be from the server: same major version, or same major.minor.
MlflowVersionSkew = Literal["major", "minor"]
MLFLOW_VERSION_SKEWS: tuple[MlflowVersionSkew, ...] = ("major", "minor")
AlertChannel = Literal["file", "slack", "email", "webhook"]
ALERT_CHANNELS: tuple[AlertChannel, ...] = ("file", "slack", "email", "webhook")


def for_model(template: str, model_name: str) -> str:
    """A name for one model: ``{model}`` in ``template`` replaced by ``model_name``."""
    return template.replace("{model}", model_name)


@dataclass(frozen=True)
class KubernetesSettings:
    """How step pods are rendered in Kubernetes mode."""

    namespace: str = "mlops"
    task_image: str = "ghcr.io/airflow-mlops/task:latest"
    service_account: str = "mlops-steps"
    data_pvc: str = "mlops-data"
    kubernetes_conn_id: str = "kubernetes_default"
    # Names of Kubernetes Secrets (references, not values).
    mlflow_secret: str = "mlops-mlflow"  # noqa: S105
    s3_secret: str = "mlops-s3"  # noqa: S105
    # "{model}" in the name: each model's release steps read their own service's token.
    serving_secret: str = "mlops-serving"  # noqa: S105 (admin_token)
    ci_secret: str = "mlops-ci"  # noqa: S105 (token)


@dataclass(frozen=True)
class ImageBuildSettings:
    """How a model version becomes a serving image (or, locally, a model-store bundle)."""

    builder: ImageBuilderKind = "bundle"
    serving_image: str = "ghcr.io/airflow-mlops/serving"  # repository; the tag is per version
    ci_conn_id: str = "ci_build"  # local runner: the CI token is this connection's password
    # CI backend (a workflow dispatch): the endpoint and poll cadence; the token is MLOPS_CI_TOKEN.
    ci_dispatch_url: str = ""
    ci_ref: str = "main"
    ci_poll_interval_s: float = 15.0
    ci_timeout_s: float = 3600.0
    # Kaniko backend: the executor image and the build context (a git URL of this repository).
    kaniko_image: str = "gcr.io/kaniko-project/executor:v1.23.2"
    build_context: str = "git://github.com/airflow-mlops/airflow-mlops.git#refs/heads/main"
    # A kubernetes.io/dockerconfigjson Secret with push credentials (a reference, not a value).
    kaniko_push_secret: str = "mlops-registry-push"  # noqa: S105
    kaniko_timeout_s: float = 1800.0


@dataclass(frozen=True)
class DeploySettings:
    """Where releases go: the local service's admin API, or Deployments in Kubernetes."""

    target: DeployTargetKind = "service"
    service_url: str = "http://127.0.0.1:8000"  # the service's admin API (target "service")
    serving_conn_id: str = "mlops_serving"  # local runner: the admin token is its password
    # One service process serves one model: the model's own serving connection (host/port/schema
    # = its URL, password = its admin token) wins over service_url and serving_conn_id, which
    # stay the deployment-wide fallback (one model, or every model behind one URL).
    model_serving_conn_id_template: str = "mlops_serving__{model}"
    # The model these name things for (Settings keeps it equal to Settings.model_name).
    model_name: str = "churn"
    # Kubernetes target: the model's stable and canary Deployments (deploy/helm/mlops-serving,
    # split by replicas). Names are templates: "{model}" becomes the model's name, so one
    # override (MLOPS_STABLE_DEPLOYMENT ...) serves every model; a literal name serves one.
    stable_deployment_template: str = "{model}-serving-stable"
    canary_deployment_template: str = "{model}-serving-canary"
    stable_replicas: int = 3
    # How the Kubernetes target splits traffic; the Rollout / HTTPRoute names are templates too.
    kubernetes_traffic: KubernetesTrafficKind = "replicas"
    rollout_template: str = "{model}-serving"
    http_route_template: str = "{model}-serving"
    # The canary analysis' source of the service's counters, and the Prometheus it queries.
    analysis_backend: AnalysisBackend = "scrape"
    prometheus_url: str = "http://127.0.0.1:9090"
    # The model's series there: a job name (deploy/monitoring's ServiceMonitor makes
    # "<model>-serving") or label matchers "{a=\"b\"}"; and how long a read waits for a scrape
    # of every target after the round (two of the Operator's default 30 s intervals, a margin).
    prometheus_selector_template: str = "{model}-serving"
    prometheus_freshness_timeout_s: float = 65.0
    rollout_timeout_s: float = 600.0  # a Deployment rollout that takes longer fails the step
    # One slot per model: its releases and rollbacks never interleave (scripts/airflow_settings.py
    # creates one per contract); a literal name makes every model share one.
    promotion_pool_template: str = "mlops_promotion__{model}"
    approval_timeout_hours: float = 24.0  # then the approval defaults to Reject
    # The API server holds an answer to an approval until its task has been parked this long
    # (mlops_provider/approvals/settle.py: Airflow 3.3.2 fails a task answered before the
    # scheduler saw the parked worker exit, ~1 s idle; a loaded scheduler takes longer, hence 10).
    approval_settle_s: float = 10.0
    # Releases start from registry events (issue 15): the deployment DAG's release-candidate
    # asset has an AssetWatcher polling MLflow this often; a candidate whose webhook was lost is
    # released after two polls (the webhook, when it arrives, wins earlier).
    registry_poll_interval_s: float = 20.0
    # The old path as an explicit fallback: the deployment DAG also wakes on every registry event,
    # the training DAG's challenger asset and the reconciliation cron, and its first task waits up
    # to candidate_wait_s for an undecided challenger. Off: runs exist only for real candidates
    # and the first task checks once.
    waiting_runs_fallback: bool = False
    candidate_wait_s: float = 1500.0  # fallback only: a run with no candidate skips after this

    @property
    def serving_name(self) -> str:
        """The model's name as Kubernetes objects carry it (DNS-1123: lower case, ``_`` -> ``-``;
        the value ``model`` of deploy/helm/mlops-serving renders the same)."""
        return self.model_name.lower().replace("_", "-")

    @property
    def stable_deployment(self) -> str:
        return for_model(self.stable_deployment_template, self.serving_name)

    @property
    def canary_deployment(self) -> str:
        return for_model(self.canary_deployment_template, self.serving_name)

    @property
    def rollout(self) -> str:
        return for_model(self.rollout_template, self.serving_name)

    @property
    def prometheus_selector(self) -> str:
        return for_model(self.prometheus_selector_template, self.serving_name)

    @property
    def http_route(self) -> str:
        return for_model(self.http_route_template, self.serving_name)

    @property
    def promotion_pool(self) -> str:
        return for_model(self.promotion_pool_template, self.model_name)

    @property
    def model_serving_conn_id(self) -> str:
        """The model's own serving connection (``mlops_serving__<model>``); optional."""
        return for_model(self.model_serving_conn_id_template, self.model_name)


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go and when a run counts as late. Secrets live in the Airflow connections
    (Slack webhook URL, SMTP password, webhook token), never here."""

    channels: tuple[AlertChannel, ...] = ("file",)
    slack_conn_id: str = "slack_alerts"
    smtp_conn_id: str = "smtp_alerts"
    webhook_conn_id: str = "alerts_webhook"
    timeout_s: float = 10.0  # per channel and alert: a dead receiver must not hold a callback
    # Deadlines (DeadlineAlert; Airflow 3 has no SLA): minutes/hours after the run was queued.
    training_deadline_minutes: float = 120.0  # default of the training DAG's Param
    approval_deadline_hours: float = 4.0  # a release still unfinished (approval unanswered?)
    rollback_deadline_minutes: float = 30.0


@dataclass(frozen=True)
class ScheduleSettings:
    """Time-based runs (UTC cron, or None for none) beside the asset events that also start
    the DAGs; the local lifecycle demo turns them off so its story runs in order."""

    training: str | None = "0 4 * * 1"  # weekly retraining, on top of new-data and drift events
    monitoring: str | None = "15 * * * *"  # hourly, once the service's last flushes landed
    deployment_reconcile: str | None = "*/30 * * * *"  # catches registry webhooks that were lost
    batch_scoring: str | None = None  # off: batch scoring runs when triggered, unless set
