"""Serving fixtures: two registered model versions in a real MLflow server, and real uvicorn
processes of the service on free loopback ports."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import pytest
from mlflow import MlflowClient
from tests.service_process import Service

MODEL = "serving_churn"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


@pytest.fixture(scope="session")
def registry(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model `serving_churn`: v1 = champion, v2 = challenger (trained by the real steps)."""
    from mlops_steps import cli

    overrides = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLOPS_HOME": str(tmp_path_factory.mktemp("serving-mlops")),
        "MLOPS_MODEL_NAME": MODEL,
        "MLOPS_EXPERIMENT": f"exp-{MODEL}",
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        for seed in ("1", "2"):
            partition = f"seed{seed}"
            for argv in (
                ["ingest", "--rows", "8000", "--seed", seed],
                ["validate"],
                ["train"],
                ["evaluate", "--bootstrap-resamples", "50"],
                ["gate", "--max-auc-drop", "1"],
                ["register"],
            ):
                assert cli.main([argv[0], "--partition", partition, *argv[1:]]) == 0, argv
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    return mlflow_server


@pytest.fixture(scope="session")
def start_service(service_starter: Callable[..., Service]) -> Callable[..., Service]:
    """Start the service for the `serving_churn` model with the test admin token."""
    return functools.partial(service_starter, model_name=MODEL, admin_token=ADMIN_TOKEN)
