"""Typed settings for the pipeline, read once from the environment.

Everything a deployment tunes (where data lives, which registry model, which runner, which image,
the step defaults it changes) is here; the step policies themselves are declared in
:mod:`mlops_steps.core.policies`. Values come from ``MLOPS_*`` environment
variables so the same code runs on a laptop, in a task pod and inside the Airflow DAG processor;
this module is stdlib-only so DAG files can import it without slowing parsing.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from mlops_steps.core.options import from_env, lookup_env
from mlops_steps.core.policies import (
    AnalysisPolicy,
    CanaryPolicy,
    DriftPolicy,
    GateThresholds,
    PerformancePolicy,
    ServedWindowPolicy,
    SourceRequest,
    TrainParams,
    ValidationPolicy,
)

RunnerMode = Literal["local", "kubernetes"]
RUNNER_MODES: tuple[RunnerMode, ...] = ("local", "kubernetes")
ImageBuilderKind = Literal["bundle", "ci", "kaniko"]
IMAGE_BUILDERS: tuple[ImageBuilderKind, ...] = ("bundle", "ci", "kaniko")
DeployTargetKind = Literal["service", "kubernetes"]
DEPLOY_TARGETS: tuple[DeployTargetKind, ...] = ("service", "kubernetes")
#: How far the MLflow client may be from the server: same major version, or same major.minor.
MlflowVersionSkew = Literal["major", "minor"]
MLFLOW_VERSION_SKEWS: tuple[MlflowVersionSkew, ...] = ("major", "minor")
AlertChannel = Literal["file", "slack", "email", "webhook"]
ALERT_CHANNELS: tuple[AlertChannel, ...] = ("file", "slack", "email", "webhook")

# include/mlops_steps/core/settings.py -> the project root, when running from a checkout.
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


_Number = TypeVar("_Number", int, float)
_Choice = TypeVar("_Choice", bound=str)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def for_model(template: str, model_name: str) -> str:
    """A name for one model: ``{model}`` in ``template`` replaced by ``model_name``."""
    return template.replace("{model}", model_name)


def _raw(name: str) -> str:
    return lookup_env(name)[1]


def _env_str(name: str, default: str) -> str:
    return _raw(name) or default


def _env_number(name: str, default: _Number) -> _Number:
    """An int or float setting (the type of ``default``), with an error naming the variable."""
    name, raw = lookup_env(name)
    if not raw:
        return default
    try:
        return type(default)(raw)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}; set it to e.g. {default}") from None


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
    rollout_timeout_s: float = 600.0  # a Deployment rollout that takes longer fails the step
    # One slot per model: its releases and rollbacks never interleave (scripts/airflow_settings.py
    # creates one per contract); a literal name makes every model share one.
    promotion_pool_template: str = "mlops_promotion__{model}"
    approval_timeout_hours: float = 24.0  # then the approval defaults to Reject
    candidate_wait_s: float = 1500.0  # a run with no undecided challenger skips after this

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


@dataclass(frozen=True)
class Settings:
    """All pipeline settings. Build with :func:`load_settings`, read with :func:`get_settings`."""

    home: Path
    data_root: Path
    runner: RunnerMode = "local"
    model_name: str = "churn"
    # MLflow experiments: templates like the Deployment names ("{model}" = the model's name).
    experiment_template: str = "{model}-training"
    mlflow_conn_id: str = "mlflow_default"
    aws_conn_id: str = "aws_default"  # local runner: S3 keys (login/password) for s3:// URIs
    # Steps refuse an MLflow server whose version differs from the client's beyond this.
    mlflow_version_skew: MlflowVersionSkew = "major"
    # Step defaults a deployment may change (core/policies.py declares each with its variable).
    ingest: SourceRequest = field(default_factory=SourceRequest)
    validation: ValidationPolicy = field(default_factory=ValidationPolicy)
    training: TrainParams = field(default_factory=TrainParams)
    gate: GateThresholds = field(default_factory=GateThresholds)
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)
    analysis: AnalysisPolicy = field(default_factory=AnalysisPolicy)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    image_build: ImageBuildSettings = field(default_factory=ImageBuildSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    schedules: ScheduleSettings = field(default_factory=ScheduleSettings)
    served_window: ServedWindowPolicy = field(default_factory=ServedWindowPolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    performance: PerformancePolicy = field(default_factory=PerformancePolicy)
    # Monitoring: the service's prediction log (a directory or s3://bucket/prefix; load_settings
    # defaults it to $MLOPS_HOME/predictions, where `make serve` writes) and the MLflow experiment
    # holding one run per monitored window.
    prediction_log: str = ""
    monitoring_experiment_template: str = "{model}-monitoring"

    def __post_init__(self) -> None:
        # The nested deploy settings name Deployments and the pool for this model, also after
        # dataclasses.replace(settings, model_name=...) (how the DAG factory gets a model's).
        if self.deploy.model_name != self.model_name:
            object.__setattr__(
                self, "deploy", dataclasses.replace(self.deploy, model_name=self.model_name)
            )

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of the model's training runs ("<model>-training")."""
        return for_model(self.experiment_template, self.model_name)

    @property
    def monitoring_experiment(self) -> str:
        """The MLflow experiment with one run per monitored window ("<model>-monitoring")."""
        return for_model(self.monitoring_experiment_template, self.model_name)

    def for_model(self, model_name: str) -> Settings:
        """These settings for another model: every name derived from the model follows it."""
        return dataclasses.replace(self, model_name=model_name)

    @property
    def dataset_root(self) -> Path:
        """Where the partitions of the model's training data live."""
        return self.data_root / self.model_name

    @property
    def model_store(self) -> Path:
        """Local bundles of model versions (the embedded stand-in for serving images)."""
        return self.home / "model-store" / self.model_name

    @property
    def ledger_path(self) -> Path:
        """The deployment audit ledger (JSON lines), beside the registry tags it mirrors."""
        return self.data_root / "ledger" / f"{self.model_name}-deployments.jsonl"

    @property
    def monitoring_root(self) -> Path:
        """Drift reports, one directory per monitored window."""
        return self.data_root / "monitoring" / self.model_name

    @property
    def labels_dir(self) -> Path:
        """Delayed ground truth (CSV/Parquet with entity_id or request_id, and the label)."""
        return self.data_root / "labels"

    @property
    def alerts_path(self) -> Path:
        """The local alert channel's JSON lines (one record per alert)."""
        return self.home / "alerts" / "alerts.jsonl"


def _env_choice(name: str, choices: tuple[_Choice, ...], default: _Choice) -> _Choice:
    name, raw = lookup_env(name)
    raw = raw or default
    for choice in choices:
        if raw == choice:
            return choice
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")


def _alert_channels_from_env() -> tuple[AlertChannel, ...]:
    """``MLOPS_ALERT_CHANNELS``: a comma-separated subset of file, slack, email, webhook."""
    raw = _raw("MLOPS_ALERT_CHANNELS")
    if not raw:
        return AlertSettings.channels
    channels: list[AlertChannel] = []
    for name in (part.strip().lower() for part in raw.split(",")):
        match = next((choice for choice in ALERT_CHANNELS if choice == name), None)
        if match is None:
            raise ConfigError(
                f"MLOPS_ALERT_CHANNELS={raw!r}: {name!r} is not one of "
                f"{', '.join(ALERT_CHANNELS)}; e.g. MLOPS_ALERT_CHANNELS=file,slack"
            )
        if match not in channels:
            channels.append(match)
    return tuple(channels)


def _env_schedule(name: str, default: str | None) -> str | None:
    """A cron expression, or ``off`` (also ``none``) for no time-based runs."""
    name, raw = lookup_env(name)
    if not raw:
        return default
    if raw.lower() in {"off", "none"}:
        return None
    if len(raw.split()) not in {5, 6} and not raw.startswith("@"):
        raise ConfigError(
            f"{name}={raw!r} is not a cron expression; set e.g. {name}='{default or '0 4 * * 1'}' "
            "or 'off'"
        )
    return raw


def load_settings() -> Settings:
    """Read settings from the environment (no caching; tests call this after changing env)."""
    default_home = _CHECKOUT_ROOT / ".mlops" if (_CHECKOUT_ROOT / "include").is_dir() else None
    home = Path(_env_str("MLOPS_HOME", str(default_home or Path.cwd() / ".mlops")))
    data_root = Path(_env_str("MLOPS_DATA_ROOT", str(home / "data")))
    k8s_defaults = KubernetesSettings()
    kubernetes = KubernetesSettings(
        namespace=_env_str("MLOPS_K8S_NAMESPACE", k8s_defaults.namespace),
        task_image=_env_str("MLOPS_TASK_IMAGE", k8s_defaults.task_image),
        service_account=_env_str("MLOPS_K8S_SERVICE_ACCOUNT", k8s_defaults.service_account),
        data_pvc=_env_str("MLOPS_K8S_DATA_PVC", k8s_defaults.data_pvc),
        kubernetes_conn_id=_env_str("MLOPS_K8S_CONN_ID", k8s_defaults.kubernetes_conn_id),
        mlflow_secret=_env_str("MLOPS_K8S_MLFLOW_SECRET", k8s_defaults.mlflow_secret),
        s3_secret=_env_str("MLOPS_K8S_S3_SECRET", k8s_defaults.s3_secret),
        serving_secret=_env_str("MLOPS_K8S_SERVING_SECRET", k8s_defaults.serving_secret),
        ci_secret=_env_str("MLOPS_K8S_CI_SECRET", k8s_defaults.ci_secret),
    )
    build_defaults, deploy_defaults = ImageBuildSettings(), DeploySettings()
    image_build = ImageBuildSettings(
        builder=_env_choice("MLOPS_IMAGE_BUILDER", IMAGE_BUILDERS, build_defaults.builder),
        serving_image=_env_str("MLOPS_SERVING_IMAGE", build_defaults.serving_image),
        ci_conn_id=_env_str("MLOPS_CI_CONN_ID", build_defaults.ci_conn_id),
        ci_dispatch_url=_env_str("MLOPS_CI_DISPATCH_URL", build_defaults.ci_dispatch_url),
        ci_ref=_env_str("MLOPS_CI_REF", build_defaults.ci_ref),
        ci_poll_interval_s=_env_number(
            "MLOPS_CI_POLL_INTERVAL_S", build_defaults.ci_poll_interval_s
        ),
        ci_timeout_s=_env_number("MLOPS_CI_TIMEOUT_S", build_defaults.ci_timeout_s),
        kaniko_image=_env_str("MLOPS_KANIKO_IMAGE", build_defaults.kaniko_image),
        build_context=_env_str("MLOPS_BUILD_CONTEXT", build_defaults.build_context),
        kaniko_push_secret=_env_str("MLOPS_KANIKO_PUSH_SECRET", build_defaults.kaniko_push_secret),
        kaniko_timeout_s=_env_number("MLOPS_KANIKO_TIMEOUT_S", build_defaults.kaniko_timeout_s),
    )
    deploy = DeploySettings(
        target=_env_choice("MLOPS_DEPLOY_TARGET", DEPLOY_TARGETS, deploy_defaults.target),
        # MLOPS_MODEL_SERVICE_URL: the model's serving connection as the release DAGs render
        # it for their steps (empty without one); MLOPS_SERVICE_URL: the deployment-wide URL.
        service_url=(
            _env_str("MLOPS_MODEL_SERVICE_URL", "")
            or _env_str("MLOPS_SERVICE_URL", deploy_defaults.service_url)
        ).rstrip("/"),
        serving_conn_id=_env_str("MLOPS_SERVING_CONN_ID", deploy_defaults.serving_conn_id),
        model_serving_conn_id_template=_env_str(
            "MLOPS_MODEL_SERVING_CONN_ID", deploy_defaults.model_serving_conn_id_template
        ),
        stable_deployment_template=_env_str(
            "MLOPS_STABLE_DEPLOYMENT", deploy_defaults.stable_deployment_template
        ),
        canary_deployment_template=_env_str(
            "MLOPS_CANARY_DEPLOYMENT", deploy_defaults.canary_deployment_template
        ),
        stable_replicas=_env_number("MLOPS_STABLE_REPLICAS", deploy_defaults.stable_replicas),
        rollout_timeout_s=_env_number("MLOPS_ROLLOUT_TIMEOUT_S", deploy_defaults.rollout_timeout_s),
        promotion_pool_template=_env_str(
            "MLOPS_PROMOTION_POOL", deploy_defaults.promotion_pool_template
        ),
        approval_timeout_hours=_env_number(
            "MLOPS_APPROVAL_TIMEOUT_HOURS", deploy_defaults.approval_timeout_hours
        ),
        candidate_wait_s=_env_number("MLOPS_CANDIDATE_WAIT_S", deploy_defaults.candidate_wait_s),
    )
    alert_defaults = AlertSettings()
    alerts = AlertSettings(
        channels=_alert_channels_from_env(),
        slack_conn_id=_env_str("MLOPS_ALERT_SLACK_CONN_ID", alert_defaults.slack_conn_id),
        smtp_conn_id=_env_str("MLOPS_ALERT_SMTP_CONN_ID", alert_defaults.smtp_conn_id),
        webhook_conn_id=_env_str("MLOPS_ALERT_WEBHOOK_CONN_ID", alert_defaults.webhook_conn_id),
        timeout_s=_env_number("MLOPS_ALERT_TIMEOUT_S", alert_defaults.timeout_s),
        training_deadline_minutes=_env_number(
            "MLOPS_TRAINING_DEADLINE_MINUTES", alert_defaults.training_deadline_minutes
        ),
        approval_deadline_hours=_env_number(
            "MLOPS_APPROVAL_DEADLINE_HOURS", alert_defaults.approval_deadline_hours
        ),
        rollback_deadline_minutes=_env_number(
            "MLOPS_ROLLBACK_DEADLINE_MINUTES", alert_defaults.rollback_deadline_minutes
        ),
    )
    schedule_defaults = ScheduleSettings()
    schedules = ScheduleSettings(
        training=_env_schedule("MLOPS_TRAINING_SCHEDULE", schedule_defaults.training),
        monitoring=_env_schedule("MLOPS_MONITORING_SCHEDULE", schedule_defaults.monitoring),
        deployment_reconcile=_env_schedule(
            "MLOPS_DEPLOYMENT_RECONCILE_SCHEDULE", schedule_defaults.deployment_reconcile
        ),
    )
    model_name = _env_str("MLOPS_MODEL_NAME", Settings.model_name)
    return Settings(
        home=home,
        data_root=data_root,
        runner=_env_choice("MLOPS_RUNNER", RUNNER_MODES, Settings.runner),
        model_name=model_name,
        experiment_template=_env_str("MLOPS_EXPERIMENT", Settings.experiment_template),
        mlflow_conn_id=_env_str("MLOPS_MLFLOW_CONN_ID", Settings.mlflow_conn_id),
        aws_conn_id=_env_str("MLOPS_AWS_CONN_ID", Settings.aws_conn_id),
        mlflow_version_skew=_env_choice(
            "MLOPS_MLFLOW_VERSION_SKEW", MLFLOW_VERSION_SKEWS, Settings.mlflow_version_skew
        ),
        ingest=from_env(SourceRequest, ConfigError),
        validation=from_env(ValidationPolicy, ConfigError),
        training=from_env(TrainParams, ConfigError),
        gate=from_env(GateThresholds, ConfigError),
        canary=from_env(CanaryPolicy, ConfigError),
        analysis=from_env(AnalysisPolicy, ConfigError),
        kubernetes=kubernetes,
        image_build=image_build,
        deploy=deploy,
        alerts=alerts,
        schedules=schedules,
        served_window=from_env(ServedWindowPolicy, ConfigError),
        drift=from_env(DriftPolicy, ConfigError),
        performance=from_env(PerformancePolicy, ConfigError),
        prediction_log=_env_str("MLOPS_PREDICTION_LOG", str(home / "predictions")),
        monitoring_experiment_template=_env_str(
            "MLOPS_MONITORING_EXPERIMENT", Settings.monitoring_experiment_template
        ),
    )


def required_secret(name: str, *, needed_for: str, fix: str) -> str:
    """A secret from the step's environment (a Kubernetes Secret in pods, the worker's env or an
    Airflow connection locally); missing, a named error says what needs it and where it comes
    from. The value is never part of a message."""
    from mlops_steps.core.errors import StepError

    value = os.environ.get(name, "").strip()
    if not value:
        raise StepError(f"is not set; {needed_for}", subject=name, fix=fix)
    return value


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings (read once)."""
    return load_settings()


@functools.cache
def code_version() -> str:
    """The git sha of the code that runs: baked into images as MLOPS_CODE_SHA, else from git."""
    baked = os.environ.get("MLOPS_CODE_SHA", "").strip()
    if baked:
        return baked
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_CHECKOUT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_CHECKOUT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
