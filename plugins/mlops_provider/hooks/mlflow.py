"""MLflow hook: owns the ``mlflow_default`` connection and speaks MLflow's REST API over HTTP.

The Airflow image does not carry the mlflow package; everything here is plain ``requests``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook


class MlflowHook(BaseHook):
    """Connection: type ``http``; host and port of the tracking server, ``schema`` = http|https,
    optional login/password for a server behind basic auth.

    Example: ``AIRFLOW_CONN_MLFLOW_DEFAULT='http://127.0.0.1:5000'``.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, timeout: float = 30.0) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.timeout = timeout

    def tracking_uri(self) -> str:
        """The server's base URL, never with credentials in it (it ends up in task env)."""
        conn = self.get_connection(self.mlflow_conn_id)
        host = conn.host or ""
        if "://" in host:  # a connection made from a full URL in the host field
            parts = urlsplit(host)
            scheme, host = parts.scheme, parts.netloc + parts.path
        else:
            scheme = conn.schema or ("https" if conn.port == 443 else "http")
        if not host:
            raise ValueError(
                f"connection {self.mlflow_conn_id!r} has no host; "
                f"set e.g. AIRFLOW_CONN_{self.mlflow_conn_id.upper()}='http://127.0.0.1:5000'"
            )
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host.rstrip('/')}{port}"

    def request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        """Call ``/api/2.0/mlflow/<endpoint>`` and return the decoded JSON body."""
        import requests

        conn = self.get_connection(self.mlflow_conn_id)
        auth = (conn.login, conn.password or "") if conn.login else None
        url = f"{self.tracking_uri()}/api/2.0/mlflow/{endpoint.lstrip('/')}"
        response = requests.request(method, url, auth=auth, timeout=self.timeout, **kwargs)
        response.raise_for_status()
        return response.json()


def mlflow_tracking_uri(conn_id: str = MlflowHook.default_conn_name) -> str:
    """Template macro: the tracking URI from the connection, else from MLFLOW_TRACKING_URI."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return MlflowHook(conn_id).tracking_uri()
    except AirflowNotFoundException:
        fallback = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if fallback:
            return fallback
        raise AirflowNotFoundException(
            f"no Airflow connection {conn_id!r} and no MLFLOW_TRACKING_URI; define the connection, "
            f"e.g. AIRFLOW_CONN_{conn_id.upper()}='http://127.0.0.1:5000'"
        ) from None
