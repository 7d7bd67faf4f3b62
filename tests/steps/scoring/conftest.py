"""Two versions of ``scoring_churn`` trained once (for the package) by the real steps against the
session's MLflow server, and the environment that points the steps at them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from tests.fixtures.contracts import contract_copy
from tests.pipeline import train_and_register
from tests.steps.scoring.support import MODEL, Versions


@pytest.fixture(scope="package")
def versions(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    """``scoring_churn`` v1 (champion, seed 1) and v2 (seed 2), trained by the real steps."""
    home = tmp_path_factory.mktemp("scoring-mlops")
    models = tmp_path_factory.mktemp("scoring-models")
    with pytest.MonkeyPatch.context() as env:
        contract_copy(models, MODEL, env)
        env.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        env.setenv("MLOPS_HOME", str(home))
        env.delenv("MLOPS_DATA_ROOT", raising=False)
        env.setenv("MLOPS_MODEL_NAME", MODEL)
        env.setenv("MLOPS_EXPERIMENT", f"exp-{MODEL}")
        for partition, seed in (("v1", "1"), ("v2", "2")):
            train_and_register(
                partition, "--seed", seed, rows=5000, gate_args=["--max-latency-ms", "1000"]
            )
    MlflowClient(mlflow_server).set_registered_model_alias(MODEL, "champion", "1")
    return Versions(home, models, mlflow_server)


@pytest.fixture
def scoring_env(versions: Versions, monkeypatch: pytest.MonkeyPatch) -> Iterator[Versions]:
    from mlops_steps.contract.loader import MODELS_DIR_ENV
    from mlops_steps.core.settings import get_settings

    monkeypatch.setenv(MODELS_DIR_ENV, str(versions.models))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", versions.tracking)
    monkeypatch.setenv("MLOPS_HOME", str(versions.home))
    monkeypatch.setenv("MLOPS_MODEL_NAME", MODEL)
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    for name in ("INPUT", "OUTPUT", "CHUNK_ROWS"):
        monkeypatch.delenv(f"MLOPS_BATCH_SCORING_{name}", raising=False)
    get_settings.cache_clear()
    yield versions
    get_settings.cache_clear()
