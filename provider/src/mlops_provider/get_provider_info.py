"""What Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point.

Plain data (plus the installed version): every Airflow component calls this at start-up, so it
imports none of the modules it names. The MLflow connection form is declared here under
``ui-field-behaviour``, the way Airflow 3.2+ reads it without importing the hook.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

PACKAGE_NAME = "airflow-provider-mlops"
MLFLOW = "MLflow"
STEPS = "airflow-mlops steps"
ALERTS = "airflow-mlops alerts"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": "airflow-mlops",
        "description": (
            "A model's lifecycle on Airflow: the MLflow registry (hook, deferrable trigger and "
            "sensor), the pipeline steps as tasks, human approval, alerts and run deadlines."
        ),
        "versions": [version(PACKAGE_NAME)],
        "integrations": [
            {
                "integration-name": MLFLOW,
                "external-doc-url": "https://mlflow.org/docs/latest/api_reference/rest-api.html",
                "tags": ["software"],
            },
            {"integration-name": STEPS, "tags": ["software"]},
            {"integration-name": ALERTS, "tags": ["software"]},
        ],
        "hooks": [{"integration-name": MLFLOW, "python-modules": ["mlops_provider.hooks.mlflow"]}],
        "triggers": [
            {"integration-name": MLFLOW, "python-modules": ["mlops_provider.triggers.registry"]}
        ],
        "sensors": [
            {"integration-name": MLFLOW, "python-modules": ["mlops_provider.sensors.registry"]}
        ],
        "operators": [
            {
                "integration-name": STEPS,
                "python-modules": [
                    "mlops_provider.operators.step",
                    "mlops_provider.operators.local",
                    "mlops_provider.operators.approval",
                    "mlops_provider.operators.outcome",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "mlops_provider.hooks.mlflow.MlflowHook",
                "hook-name": MLFLOW,
                "ui-field-behaviour": {
                    "hidden-fields": ["extra"],
                    "relabeling": {
                        "host": "Tracking server host (or its full URL)",
                        "schema": "Scheme",
                        "login": "Username (basic auth)",
                        "password": "Password (basic auth)",
                    },
                    "placeholders": {
                        "host": "mlflow.example.com",
                        "port": "5000",
                        "schema": "http or https",
                        "login": "only for a server behind basic auth",
                    },
                },
            }
        ],
        "notifications": ["mlops_provider.notifications.notifier.MlopsNotifier"],
    }
