"""The MLflow side of the steps: finding the server, runs and model versions."""

from __future__ import annotations

import os
from typing import Any

from mlops_steps.core.errors import StepError

_HEALTH_TIMEOUT_S = 10.0
CHAMPION, CHALLENGER = "champion", "challenger"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise StepError(
            "is not set",
            subject="MLFLOW_TRACKING_URI",
            fix="define the Airflow connection mlflow_default (the runners pass it to the step)",
        )
    return uri


def connect() -> Any:
    """An MlflowClient for a server that answered its health check (fail fast, named)."""
    import mlflow
    import requests

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=_HEALTH_TIMEOUT_S)
            healthy = response.status_code == 200
        except requests.RequestException as exc:
            raise StepError(
                f"MLflow server is unreachable ({type(exc).__name__})",
                subject=uri,
                fix="start the server (make mlflow) or fix the mlflow_default connection",
            ) from None
        if not healthy:
            raise StepError(
                f"MLflow health check answered HTTP {response.status_code}", subject=uri
            )
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def version_by_alias(client: Any, model_name: str, alias: str) -> Any | None:
    """The model version behind ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise
