"""Monitoring fixtures: one champion trained by the real steps (model ``churn``, because the
training DAG listens on ``mlops://churn/drift-detected``), shared by every monitoring test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.pipeline import train_and_register

MODEL = "churn"
REFERENCE_PARTITION = "reference"


@dataclass(frozen=True)
class Champion:
    home: Path  # MLOPS_HOME holding the champion's training partition
    name: str
    version: str
    model: Any  # the champion loaded as MLflow pyfunc, to score test traffic like the service


@pytest.fixture(scope="session")
def champion(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    """``churn`` v1 (8,000 fresh rows, seed 1) with the alias ``champion``."""
    import mlflow

    home = tmp_path_factory.mktemp("monitoring-mlops")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_MODEL_NAME", MODEL)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{MODEL}-monitoring-tests")
        # Latency is not what these tests judge (and a busy machine would fail that gate).
        train_and_register(
            REFERENCE_PARTITION, "--seed", "1", gate_args=["--max-latency-ms", "1000"]
        )
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, "champion", "1")
    mlflow.set_tracking_uri(mlflow_server)
    yield Champion(home, MODEL, "1", mlflow.pyfunc.load_model(f"models:/{MODEL}/1"))


@pytest.fixture
def monitoring_env(
    champion: Champion, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> Champion:
    """Steps in this process see the champion's home, model and the MLflow server."""
    from mlops_steps.config import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLOPS_HOME", str(champion.home))
    monkeypatch.setenv("MLOPS_MODEL_NAME", champion.name)
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    monkeypatch.delenv("MLOPS_PREDICTION_LOG", raising=False)
    get_settings.cache_clear()
    return champion
