"""Credentials never become literal environment values of a step: a pod spec shows its env to
anyone who can read pods (and Airflow used to log it on failure), so secrets travel only as
Kubernetes Secret references (pods) or from connections at run time (local runner)."""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowFailException

from mlops_provider.hooks.mlflow import MlflowHook, mlflow_tracking_uri


class CredentialsInUrl(AirflowFailException):
    """A URL bound for a step's environment carries ``user:pass@``. Env values are literals in
    the pod spec (visible to anyone who can read pods, and in logs of failed pods), so
    credentials travel only as Secret references; the task fails instead of leaking them."""


def refuse_credentials_in_url(value: str, *, source: str) -> str:
    """``value`` unchanged when it is not a URL with user info; else :class:`CredentialsInUrl`
    naming ``source`` (never the value: it holds the secret)."""
    try:
        netloc = urlsplit(value).netloc if "://" in value else ""
    except ValueError:  # unparseable: judge the part before the path
        netloc = value.split("://", 1)[1].split("/", 1)[0]
    if "@" in netloc:
        raise CredentialsInUrl(
            f"{source} holds credentials (user:password@) in its URL, which would become a plain "
            "environment value of the step. Fix: remove them from the URL; put the MLflow login "
            "and password in the connection's login/password fields (local runner) and in the "
            "Kubernetes Secret the pods reference (MLOPS_K8S_MLFLOW_SECRET, keys "
            "username/password)"
        )
    return value


def mlflow_tracking_uri_for_steps(conn_id: str = MlflowHook.default_conn_name) -> str:
    """Template macro: the connection's tracking URI, refused if it carries credentials."""
    return refuse_credentials_in_url(
        mlflow_tracking_uri(conn_id), source=f"Airflow connection {conn_id!r} (host)"
    )
