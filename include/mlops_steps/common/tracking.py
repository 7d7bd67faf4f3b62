"""The MLflow side of the steps: finding the server, runs and model versions."""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from mlops_steps.core.errors import StepError
from mlops_steps.core.sections import MlflowVersionSkew
from mlops_steps.core.settings import get_settings

_HEALTH_TIMEOUT_S = 10.0
CHAMPION, CHALLENGER = "champion", "challenger"


class MlflowVersionMismatch(StepError):
    """The MLflow client in this step and the tracking server are further apart than allowed:
    the REST API and the stored formats (logged models, registry fields) differ across majors."""


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise StepError(
            "is not set",
            subject="MLFLOW_TRACKING_URI",
            fix="define the Airflow connection mlflow_default (the runners pass it to the step)",
        )
    return uri


def _release(version: str, *, whose: str, uri: str) -> tuple[int, int]:
    """(major, minor) of a version string such as ``3.17.2`` or ``3.18.0.dev0``."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        raise MlflowVersionMismatch(
            f"the {whose} version {version[:80]!r} is not a version number, so client and "
            "server cannot be compared",
            subject=uri,
            fix="point MLFLOW_TRACKING_URI at an MLflow tracking server (GET /version answers "
            "its version)",
        )
    return int(match[1]), int(match[2])


def check_versions(
    client_version: str, server_version: str, allowed: MlflowVersionSkew, *, uri: str
) -> None:
    """Refuse a client/server pair further apart than ``allowed`` (same major, or same
    major.minor); the error names both versions and how to line them up."""
    client, server = (
        _release(client_version, whose="client", uri=uri),
        _release(server_version, whose="server", uri=uri),
    )
    same = client[0] == server[0] if allowed == "major" else client == server
    if not same:
        level = "major version" if allowed == "major" else "major.minor version"
        raise MlflowVersionMismatch(
            f"MLflow client {client_version} and server {server_version} differ in their "
            f"{level} (MLOPS_MLFLOW_VERSION_SKEW={allowed})",
            subject=uri,
            fix=f"install mlflow=={server_version} where the steps run (the task image or the "
            f"worker's environment), or upgrade the server to {client_version}",
        )


def _auth() -> tuple[str, str] | None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    return (user, os.environ.get("MLFLOW_TRACKING_PASSWORD", "")) if user else None


def _get(uri: str, path: str) -> Any:
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}{path}", timeout=_HEALTH_TIMEOUT_S, auth=_auth())
    except requests.RequestException as exc:
        raise StepError(
            f"MLflow server is unreachable ({type(exc).__name__})",
            subject=uri,
            fix="start the server (make mlflow) or fix the mlflow_default connection",
        ) from None


@functools.cache
def _checked_server(uri: str, allowed: MlflowVersionSkew, client_version: str) -> str:
    """Health and version of the server at ``uri``, checked once per process (the cache keeps
    only successes: a failed check raises and is asked again next time)."""
    response = _get(uri, "/health")
    if response.status_code != 200:
        raise StepError(f"MLflow health check answered HTTP {response.status_code}", subject=uri)
    response = _get(uri, "/version")
    if response.status_code != 200:
        raise MlflowVersionMismatch(
            f"GET /version answered HTTP {response.status_code}, so the server's MLflow version "
            f"cannot be compared with the client's ({client_version})",
            subject=uri,
            fix="let the proxy in front of MLflow pass GET /version (and /health) through",
        )
    server_version = response.text.strip()
    check_versions(client_version, server_version, allowed, uri=uri)
    return server_version


def connect() -> Any:
    """An MlflowClient for a server that answered its health check and runs an MLflow version
    this client may talk to (MLOPS_MLFLOW_VERSION_SKEW); both checked once per process."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _checked_server(uri, get_settings().mlflow_version_skew, mlflow.__version__)
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
