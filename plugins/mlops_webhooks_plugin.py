"""Airflow plugin: serve the MLflow webhook bridge at ``/mlops-webhooks/mlflow`` in the API server.

This file sits at the top of ``plugins/`` so Airflow's plugin manager loads it (the provider
package itself is in ``.airflowignore``); the logic lives in ``mlops_provider.webhooks``. Plugin
apps are not behind Airflow's auth: every delivery must carry MLflow's HMAC signature.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.webhooks.mount import fastapi_app_spec


class MlopsWebhooksPlugin(AirflowPlugin):
    """Mounts the bridge; see ``mlops_provider.webhooks`` for configuration."""

    name = "mlops_webhooks"
    fastapi_apps = [fastapi_app_spec()]  # noqa: RUF012 - Airflow's declared plugin attribute
