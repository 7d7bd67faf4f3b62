"""The environment that runs this project's DAGs on the embedded default: Airflow reading the
repository's dags/ and plugins/, the local runner, and MLflow through the mlflow_default connection.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def local_airflow_env(home: Path, mlflow_url: str) -> dict[str, str]:
    """``os.environ`` plus what `airflow dags test` needs, with all state under ``home``."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_MLFLOW_DEFAULT": mlflow_url,
        "MLOPS_HOME": str(home),
        "MLOPS_RUNNER": "local",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
