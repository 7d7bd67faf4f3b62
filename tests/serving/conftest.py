"""Serving fixtures: two registered model versions in a real MLflow server, and real uvicorn
processes of the service on free loopback ports."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from mlflow import MlflowClient
from tests.pipeline import train_and_register
from tests.service_process import Service

from mlops_steps.contract.loader import contract_path

MODEL = "serving_churn"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def registry(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `serving_churn`: v1 = champion, v2 = challenger (trained by the real steps)."""
    home = tmp_path_factory.mktemp("serving-mlops")
    # The churn contract under this model's name (the steps load the contract by model name).
    models = home / "models"
    models.mkdir()
    churn = contract_path("churn").read_text(encoding="utf-8")
    (models / f"{MODEL}.yaml").write_text(churn.replace("name: churn\n", f"name: {MODEL}\n", 1))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_MODELS_DIR", str(models))
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(home))
        env.setenv("MLOPS_MODEL_NAME", MODEL)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{MODEL}")
        for seed in ("1", "2"):
            # Latency is not what these tests judge (a busy machine would fail that gate).
            gate = ["--checks", '[{"metric": "auc", "threshold": 0.5}]', "--max-latency-ms", "1000"]
            train_and_register(f"seed{seed}", "--seed", seed, gate_args=gate)
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return mlflow_server


@pytest.fixture(scope="session")
def start_service(service_starter: Callable[..., Service]) -> Callable[..., Service]:
    """Start the service for the `serving_churn` model with the test admin token."""
    return functools.partial(service_starter, model_name=MODEL, admin_token=ADMIN_TOKEN)
