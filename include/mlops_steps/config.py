"""Typed settings for the pipeline, read once from the environment.

Everything a deployment tunes (where data lives, which registry model, which runner, which image,
the default gate thresholds) is here and nowhere else. Values come from ``MLOPS_*`` environment
variables so the same code runs on a laptop, in a task pod and inside the Airflow DAG processor;
this module is stdlib-only so DAG files can import it without slowing parsing.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

RunnerMode = Literal["local", "kubernetes"]
RUNNER_MODES: tuple[RunnerMode, ...] = ("local", "kubernetes")

# include/mlops_steps/config.py -> the project root, when running from a checkout.
_CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


_Number = TypeVar("_Number", int, float)


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _env_str(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_number(name: str, default: _Number) -> _Number:
    """An int or float setting (the type of ``default``), with an error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return type(default)(raw)
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}; set it to e.g. {default}") from None


@dataclass(frozen=True)
class GateThresholds:
    """Default quality-gate thresholds; each DAG run can override them through its Params."""

    min_auc: float = 0.80
    min_accuracy: float = 0.75
    max_latency_ms: float = 25.0
    max_auc_drop: float = 0.01


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


@dataclass(frozen=True)
class Settings:
    """All pipeline settings. Build with :func:`load_settings`, read with :func:`get_settings`."""

    home: Path
    data_root: Path
    runner: RunnerMode = "local"
    model_name: str = "churn"
    experiment_name: str = "churn-training"
    mlflow_conn_id: str = "mlflow_default"
    default_rows: int = 50_000
    default_seed: int = 42
    min_rows: int = 1_000
    gate: GateThresholds = field(default_factory=GateThresholds)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    @property
    def dataset_root(self) -> Path:
        """Where the partitions of the model's training data live."""
        return self.data_root / self.model_name


def _runner_from_env() -> RunnerMode:
    # AIRFLOW_VAR_MLOPS_RUNNER is how an Airflow Variable is set through the environment, which
    # is the only form the DAG processor can read without a metadata-database query per parse.
    raw = (
        os.environ.get("MLOPS_RUNNER") or os.environ.get("AIRFLOW_VAR_MLOPS_RUNNER") or "local"
    ).strip()
    for mode in RUNNER_MODES:
        if raw == mode:
            return mode
    raise ConfigError(f"MLOPS_RUNNER={raw!r} is not one of {', '.join(RUNNER_MODES)}")


def load_settings() -> Settings:
    """Read settings from the environment (no caching; tests call this after changing env)."""
    default_home = _CHECKOUT_ROOT / ".mlops" if (_CHECKOUT_ROOT / "include").is_dir() else None
    home = Path(_env_str("MLOPS_HOME", str(default_home or Path.cwd() / ".mlops")))
    data_root = Path(_env_str("MLOPS_DATA_ROOT", str(home / "data")))
    gate = GateThresholds(
        min_auc=_env_number("MLOPS_GATE_MIN_AUC", GateThresholds.min_auc),
        min_accuracy=_env_number("MLOPS_GATE_MIN_ACCURACY", GateThresholds.min_accuracy),
        max_latency_ms=_env_number("MLOPS_GATE_MAX_LATENCY_MS", GateThresholds.max_latency_ms),
        max_auc_drop=_env_number("MLOPS_GATE_MAX_AUC_DROP", GateThresholds.max_auc_drop),
    )
    k8s_defaults = KubernetesSettings()
    kubernetes = KubernetesSettings(
        namespace=_env_str("MLOPS_K8S_NAMESPACE", k8s_defaults.namespace),
        task_image=_env_str("MLOPS_TASK_IMAGE", k8s_defaults.task_image),
        service_account=_env_str("MLOPS_K8S_SERVICE_ACCOUNT", k8s_defaults.service_account),
        data_pvc=_env_str("MLOPS_K8S_DATA_PVC", k8s_defaults.data_pvc),
        kubernetes_conn_id=_env_str("MLOPS_K8S_CONN_ID", k8s_defaults.kubernetes_conn_id),
        mlflow_secret=_env_str("MLOPS_K8S_MLFLOW_SECRET", k8s_defaults.mlflow_secret),
        s3_secret=_env_str("MLOPS_K8S_S3_SECRET", k8s_defaults.s3_secret),
    )
    return Settings(
        home=home,
        data_root=data_root,
        runner=_runner_from_env(),
        model_name=_env_str("MLOPS_MODEL_NAME", Settings.model_name),
        experiment_name=_env_str("MLOPS_EXPERIMENT", Settings.experiment_name),
        mlflow_conn_id=_env_str("MLOPS_MLFLOW_CONN_ID", Settings.mlflow_conn_id),
        default_rows=_env_number("MLOPS_DEFAULT_ROWS", Settings.default_rows),
        default_seed=_env_number("MLOPS_DEFAULT_SEED", Settings.default_seed),
        min_rows=_env_number("MLOPS_MIN_ROWS", Settings.min_rows),
        gate=gate,
        kubernetes=kubernetes,
    )


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
