"""Airflow plugin: serve the MLflow webhook bridge at ``/mlops-webhooks/mlflow`` in the API server.

Only the wiring lives here; the bridge is ``mlops_provider.webhooks`` in the installed provider.
The app is built on its first request (:class:`~mlops_provider.webhooks.mount.LazyASGIApp`):
every Airflow component loads plugins, only the API server serves them. Plugin apps are not
behind Airflow's auth: every delivery must carry MLflow's HMAC signature.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.webhooks.mount import URL_PREFIX, ASGIApp, LazyASGIApp


def _bridge_app() -> ASGIApp:
    from mlops_provider.webhooks.app import create_app  # FastAPI and the DB models: API server only

    return create_app()


class MlopsWebhooksPlugin(AirflowPlugin):
    """Mounts the bridge; see ``mlops_provider.webhooks`` for configuration."""

    name = "mlops_webhooks"
    fastapi_apps = [  # noqa: RUF012 - Airflow's declared plugin attribute
        {
            "app": LazyASGIApp(_bridge_app),
            "url_prefix": URL_PREFIX,
            "name": "MLflow registry webhooks",
        }
    ]
