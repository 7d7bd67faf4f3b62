"""Airflow plugin: serve the pipeline's reports at ``/mlops-reports/<path>`` in the API server.

Only the wiring lives here; the app is ``mlops_provider.reports`` in the installed provider and
the prefix comes from ``mlops_steps.core.report_links`` (where the steps build their links). The
app is built on its first request (every Airflow component loads plugins, only the API server
serves them). Unlike the webhook bridge, every route requires Airflow's own login.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.webhooks.mount import ASGIApp, LazyASGIApp
from mlops_steps.core.report_links import URL_PREFIX


def _reports_app() -> ASGIApp:
    from mlops_provider.reports.app import create_app  # FastAPI and Airflow's security: API only

    return create_app()


class MlopsReportsPlugin(AirflowPlugin):
    """Mounts the reports app; see ``mlops_provider.reports``."""

    name = "mlops_reports"
    fastapi_apps = [  # noqa: RUF012 - Airflow's declared plugin attribute
        {
            "app": LazyASGIApp(_reports_app),
            "url_prefix": URL_PREFIX,
            "name": "MLOps reports",
        }
    ]
