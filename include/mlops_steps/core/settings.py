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
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

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
from mlops_steps.core.sections import (
    ALERT_CHANNELS,
    ANALYSIS_BACKENDS,
    DEPLOY_TARGETS,
    IMAGE_BUILDERS,
    KUBERNETES_TRAFFIC,
    MLFLOW_VERSION_SKEWS,
    RUNNER_MODES,
    AlertChannel,
    AlertSettings,
    DeploySettings,
    ImageBuildSettings,
    KubernetesSettings,
    MlflowVersionSkew,
    RunnerMode,
    ScheduleSettings,
    for_model,
)

# include/mlops_steps/core/settings.py -> the project root, when running from a checkout.
_CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


_Number = TypeVar("_Number", int, float)
_Choice = TypeVar("_Choice", bound=str)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


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
class Settings:
    """All pipeline settings. Build with :func:`load_settings`, read with :func:`get_settings`."""

    home: Path
    # Where steps read and write partitions, results and reports: MLOPS_DATA_ROOT when it is a
    # directory; with an object store (``data_plane``) a per-process working copy of it.
    data_root: Path
    runner: RunnerMode = "local"
    model_name: str = "churn"
    # MLflow experiments: templates like the Deployment names ("{model}" = the model's name).
    experiment_template: str = "{model}-training"
    mlflow_conn_id: str = "mlflow_default"
    aws_conn_id: str = "aws_default"  # local runner: S3 keys (login/password) for s3:// URIs
    # Steps refuse an MLflow server whose version differs from the client's beyond this.
    mlflow_version_skew: MlflowVersionSkew = "major"
    # Step defaults a deployment may change (core/policies/ declares each with its variable).
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
    # Delayed ground truth: MLOPS_LABELS, a directory or s3://bucket/prefix that may hold
    # "{model}"; empty: see labels_location.
    labels_template: str = ""
    # MLOPS_AIRFLOW_URL: the Airflow API server's base URL as a person's browser reaches it;
    # report links (core/report_links.py) point at its reports route. Empty: plain paths.
    airflow_url: str = ""
    # MLOPS_DATA_ROOT when it is an object store (``s3://bucket/prefix``; common/dataplane.py):
    # steps then work in ``data_root`` and publish to it. Empty: the data root is a directory.
    data_plane: str = ""
    # MLOPS_MODEL_STORE: where the bundle builder puts model bundles and the service loads them
    # (a directory or s3://..., may hold "{model}"); empty: ``$MLOPS_HOME/model-store/<model>``.
    model_store_template: str = ""

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
    def data_root_setting(self) -> str:
        """MLOPS_DATA_ROOT as a step process must be given it (the store, not a working copy)."""
        return self.data_plane or str(self.data_root)

    @property
    def model_store_location(self) -> str:
        """Bundles of model versions (the embedded stand-in for serving images): a directory or
        an object-store prefix."""
        if self.model_store_template:
            return for_model(self.model_store_template, self.model_name)
        return str(self.home / "model-store" / self.model_name)

    @property
    def model_store(self) -> Path:
        """The model store as a directory (when ``model_store_location`` is not an object store)."""
        return Path(self.model_store_location)

    @property
    def ledger_path(self) -> Path:
        """The deployment audit ledger (JSON lines), beside the registry tags it mirrors."""
        return self.data_root / "ledger" / f"{self.model_name}-deployments.jsonl"

    @property
    def monitoring_root(self) -> Path:
        """Drift reports, one directory per monitored window."""
        return self.data_root / "monitoring" / self.model_name

    @property
    def labels_location(self) -> str:
        """The model's label landing place (CSV/Parquet files of ids, label and label_time):
        MLOPS_LABELS with "{model}" filled in; unset, ``<data_root>/labels/<model>`` when that
        directory exists, else ``<data_root>/labels`` (the single-model layout)."""
        if self.labels_template:
            return for_model(self.labels_template, self.model_name)
        if self.data_plane:
            return f"{self.data_plane}/labels/{self.model_name}"
        own = self.data_root / "labels" / self.model_name
        return str(own if own.is_dir() else self.data_root / "labels")

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


#: The registry watcher's poll interval bounds the delay of a release whose webhook was lost.
_POLL_INTERVAL_BOUNDS_S = (1.0, 300.0)


def _poll_interval(default: float) -> float:
    """``MLOPS_REGISTRY_POLL_INTERVAL_S``, within the bounds (a lost webhook must not wait long)."""
    value = _env_number("MLOPS_REGISTRY_POLL_INTERVAL_S", default)
    low, high = _POLL_INTERVAL_BOUNDS_S
    if not low <= value <= high:
        raise ConfigError(
            f"MLOPS_REGISTRY_POLL_INTERVAL_S={value:g} is outside {low:g}..{high:g} seconds; "
            f"set it to e.g. {default:g}"
        )
    return value


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


def _process_tag() -> str:
    """This process on this host, as a file-name part (storage.attempt_tag's form)."""
    host = "".join(c if c.isalnum() or c in "_.-" else "_" for c in socket.gethostname())[:40]
    return f"{host or 'host'}-{os.getpid()}"


def load_settings() -> Settings:
    """Read settings from the environment (no caching; tests call this after changing env)."""
    default_home = _CHECKOUT_ROOT / ".mlops" if (_CHECKOUT_ROOT / "include").is_dir() else None
    home = Path(_env_str("MLOPS_HOME", str(default_home or Path.cwd() / ".mlops")))
    data_root_setting = _env_str("MLOPS_DATA_ROOT", str(home / "data"))
    data_plane = data_root_setting.rstrip("/") if data_root_setting.startswith("s3://") else ""
    # An object store is worked on in a copy of this process's own (host and pid: overlapping
    # attempts, on one machine or many, never share one); common/dataplane.py fills, publishes it.
    scratch = Path(tempfile.gettempdir()) / "mlops-scratch" / f"data-{_process_tag()}"
    data_root = scratch if data_plane else Path(data_root_setting)
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
        kubernetes_traffic=_env_choice(
            "MLOPS_K8S_TRAFFIC", KUBERNETES_TRAFFIC, deploy_defaults.kubernetes_traffic
        ),
        rollout_template=_env_str("MLOPS_ROLLOUT", deploy_defaults.rollout_template),
        http_route_template=_env_str("MLOPS_HTTP_ROUTE", deploy_defaults.http_route_template),
        analysis_backend=_env_choice(
            "MLOPS_ANALYSIS_BACKEND", ANALYSIS_BACKENDS, deploy_defaults.analysis_backend
        ),
        prometheus_url=_env_str("MLOPS_PROMETHEUS_URL", deploy_defaults.prometheus_url),
        prometheus_selector_template=_env_str(
            "MLOPS_PROMETHEUS_SELECTOR", deploy_defaults.prometheus_selector_template
        ),
        prometheus_freshness_timeout_s=_env_number(
            "MLOPS_PROMETHEUS_FRESHNESS_TIMEOUT_S", deploy_defaults.prometheus_freshness_timeout_s
        ),
        rollout_timeout_s=_env_number("MLOPS_ROLLOUT_TIMEOUT_S", deploy_defaults.rollout_timeout_s),
        promotion_pool_template=_env_str(
            "MLOPS_PROMOTION_POOL", deploy_defaults.promotion_pool_template
        ),
        approval_timeout_hours=_env_number(
            "MLOPS_APPROVAL_TIMEOUT_HOURS", deploy_defaults.approval_timeout_hours
        ),
        candidate_wait_s=_env_number("MLOPS_CANDIDATE_WAIT_S", deploy_defaults.candidate_wait_s),
        approval_settle_s=_env_number("MLOPS_APPROVAL_SETTLE_S", deploy_defaults.approval_settle_s),
        registry_poll_interval_s=_poll_interval(deploy_defaults.registry_poll_interval_s),
        waiting_runs_fallback=_env_choice(
            "MLOPS_DEPLOYMENT_WAITING_FALLBACK", ("false", "true"), "false"
        )
        == "true",
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
        batch_scoring=_env_schedule(
            "MLOPS_BATCH_SCORING_SCHEDULE", schedule_defaults.batch_scoring
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
        labels_template=_env_str("MLOPS_LABELS", Settings.labels_template),
        airflow_url=_env_str("MLOPS_AIRFLOW_URL", Settings.airflow_url).rstrip("/"),
        data_plane=data_plane,
        model_store_template=_env_str("MLOPS_MODEL_STORE", Settings.model_store_template),
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
