"""Serving fixtures: two registered model versions in a real MLflow server, and real uvicorn
processes of the service on free loopback ports."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from mlflow import MlflowClient
from tests.pipeline import train_and_register
from tests.service_process import Service

MODEL = "serving_churn"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def registry(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `serving_churn`: v1 = champion, v2 = challenger (trained by the real steps)."""
    home = tmp_path_factory.mktemp("serving-mlops")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_MODEL_NAME", MODEL)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{MODEL}")
        for seed in ("1", "2"):
            # Latency is not what these tests judge (a busy machine would fail that gate).
            gate = ["--max-auc-drop", "1", "--max-latency-ms", "1000"]
            train_and_register(f"seed{seed}", "--seed", seed, gate_args=gate)
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return mlflow_server


@pytest.fixture(scope="session")
def start_service(service_starter: Callable[..., Service]) -> Callable[..., Service]:
    """Start the service for the `serving_churn` model with the test admin token."""
    return functools.partial(service_starter, model_name=MODEL, admin_token=ADMIN_TOKEN)
