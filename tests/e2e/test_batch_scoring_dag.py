"""The batch scoring DAG through dag.test(): the step runs as a child process of the local
runner against a real MLflow server and the champion trained by the real steps, writes its run
under run=<logical date>/, and a table that is not the contract's fails the run without retries
and without writing anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pendulum
import pytest

from mlops_steps.common.columnar import plain_values
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.synthetic import generate_churn
from tests.dags.helpers import for_dag_test, load_dags, return_value, task_states
from tests.fixtures.champion import Champion

pytestmark = pytest.mark.e2e
DAG_ID = "mlops_batch_scoring__churn"
CHURN = load_contract("churn")


@pytest.fixture
def scoring_dag(
    monitoring_env: Champion,
    airflow_db: Path,
    mlflow_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_server)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the task must get it from the connection
    dag = for_dag_test(load_dags(monkeypatch, "local")[DAG_ID])
    monkeypatch.delenv("MLOPS_RUNNER")
    yield dag


def test_a_triggered_run_scores_the_table_and_a_foreign_table_fails_closed(
    scoring_dag: Any, monitoring_env: Champion, tmp_path: Path
) -> None:
    frame = generate_churn(3000, seed=12)
    source = tmp_path / "customers.parquet"
    frame.to_parquet(source, index=False)
    output = tmp_path / "scores"
    logical_date = pendulum.datetime(2026, 11, 24, 2, 0, tz="UTC")
    conf = {"input_uri": str(source), "output_uri": str(output), "chunk_rows": 1000}

    run = scoring_dag.test(logical_date=logical_date, run_conf=conf)
    assert task_states(run) == {"score_batch": "success"}
    result = return_value(run, "score_batch")
    assert (result["rows"], result["model_version"]) == (3000, "1")
    assert result["run"] == "20261124T020000"  # the logical date
    directory = output / "run=20261124T020000"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["chunks"] == 3 and manifest["input"]["path"] == str(source)
    scored = pd.concat([pd.read_parquet(directory / f["path"]) for f in manifest["files"]])
    # The champion as MLflow serves it (the pyfunc, signature checks and all) on the same rows.
    expected = np.asarray(
        monitoring_env.model.predict(plain_values(frame.loc[:, list(CHURN.feature_names)]))
    )
    assert np.allclose(scored["score"].to_numpy(), expected, rtol=0, atol=1e-12)

    foreign = frame.rename(columns={"tenure_months": "tenure"})
    foreign.to_parquet(tmp_path / "foreign.parquet", index=False)
    failed = scoring_dag.test(
        logical_date=logical_date.add(days=1),
        run_conf={**conf, "input_uri": str(tmp_path / "foreign.parquet")},
    )
    assert task_states(failed) == {"score_batch": "failed"}
    assert sorted(p.name for p in output.iterdir()) == ["run=20261124T020000"]
