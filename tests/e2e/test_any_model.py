"""Bring your own model, end to end on real data no one here wrote: scikit-learn's breast cancer
(binary), wine (multiclass) and diabetes (regression) tables, each written to a CSV.

For each, as a new user would: ``mlops-step contract infer`` drafts the contract, a person adds a
hard limit and ``contract check`` accepts it; the model's own training DAG
(``mlops_training__<model>``, built by the DAG factory from that file) registers a challenger
with its task's metrics through ``dag.test()`` against a real MLflow server; its deployment DAG
releases it (approved through Airflow's REST API) to a real service process, which then answers
in the task's shape and refuses the impossible value with a 422 naming the field. Plus a table
with blanks: the drafted contract makes that feature nullable and training passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pendulum
import pytest
from mlflow import MlflowClient

from mlflow_server import free_port
from tests import airflow_api
from tests.dags.helpers import for_dag_test, load_dags
from tests.e2e.any_model_data import (
    DATASETS,
    Dataset,
    check,
    feature_records,
    fewer_rounds,
    infer,
    set_hard_limit,
)
from tests.service_process import Service

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "byo-admin-token-0123456789abcdef"
LOGICAL_DATE = pendulum.datetime(2026, 11, 16, tz="UTC")
# Per-row latency is gated elsewhere; a busy machine must not stop these models at the gate.
TRAINING_CONF = {"max_latency_ms": 500}
# One short analysis round: the release path, not the analysis' statistics, is under test here.
RELEASE_CONF = {
    "analysis_rounds": 1,
    "max_failed_rounds": 1,
    "requests_per_round": 40,
    "round_interval_s": 0,
    "max_p99_ms": 1000,
}
TASK_METRICS = {
    "binary": ("auc", "log_loss", "accuracy", "f1"),
    "multiclass": ("log_loss", "macro_f1", "accuracy"),
    "regression": ("rmse", "mae", "r2"),
}


@dataclass
class UserModel:
    """A user's model: its table, its contract, its DAGs and the service it is released to."""

    dataset: Dataset
    source: Path
    contract: Path
    dags: dict[str, Any]
    client: MlflowClient
    service: Service | None

    def dag(self, kind: str) -> Any:
        return for_dag_test(self.dags[f"mlops_{kind}__{self.dataset.model}"])

    def version(self, number: str) -> Any:
        return self.client.get_model_version(self.dataset.model, number)

    def aliases(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.dataset.model).aliases)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _onboard(
    dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    blanks: tuple[str, float] | None = None,
) -> tuple[Path, Path]:
    """The table as a CSV (``blanks``: that column's share of cells left empty), its drafted,
    edited and checked contract; MLOPS_MODELS_DIR pointing at it. Returns (csv, contract)."""
    frame = dataset.frame()
    if blanks is not None:
        column, share = blanks
        frame.loc[frame.sample(frac=share, random_state=0).index, column] = None
    source = tmp_path / f"{dataset.model}.csv"
    frame.to_csv(source, index=False)
    models = tmp_path / "models"
    models.mkdir()
    contract = infer(source, dataset, models)
    set_hard_limit(contract, dataset.limited, dataset.limits)
    fewer_rounds(contract)
    checked = check(dataset, models)
    assert f"{contract}: valid" in checked
    assert f"task      {dataset.task}; label target; id from row content" in checked
    assert f"mlops_training__{dataset.model}:" in checked
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    return source, contract


@pytest.fixture
def user_env(
    mlflow_server: str, airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowClient:
    """A fresh MLOPS home; the tasks find MLflow through the Airflow connection."""
    from mlops_steps.core.settings import get_settings

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.delenv("MLOPS_DATA_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", mlflow_server)
    get_settings.cache_clear()
    return MlflowClient(mlflow_server)


def _dags(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The DAG factory's DAGs for the models directory, as the DAG processor builds them."""
    dags = load_dags(monkeypatch, "local")
    monkeypatch.delenv("MLOPS_RUNNER")
    return dags


def _served_by(
    service_starter: Callable[..., Service],
    mlflow_server: str,
    model: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Service:
    """A service process for ``model`` with no champion yet (it answers /ready 503), reached by
    the release steps through the model's own serving connection (``mlops_serving__<model>``:
    its URL and admin token); the deployment-wide URL leads nowhere, so a release that used it
    would fail."""
    service = service_starter(
        mlflow_server,
        model_name=model,
        admin_token=ADMIN_TOKEN,
        wait_ready=False,
        SERVING_MODEL_STORE=str(tmp_path / "mlops" / "model-store" / model),
    )
    assert service.process.poll() is None, service.output.read_text()[-3000:]
    monkeypatch.setenv("MLOPS_SERVICE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_MLOPS_SERVING__{model.upper()}",
        json.dumps({"conn_type": "http", "host": service.url, "password": ADMIN_TOKEN}),
    )
    # No champion: the first release is judged on its own hold-out, by choice.
    monkeypatch.setenv("MLOPS_ANALYSIS_FIRST_RELEASE", "candidate_holdout")
    monkeypatch.setenv("MLOPS_CANDIDATE_WAIT_S", "20")
    return service


def _train(user: UserModel) -> dict[str, float]:
    """The training DAG through dag.test(): challenger v1 with its task's hold-out metrics."""
    dataset = user.dataset
    run = user.dag("training").test(logical_date=LOGICAL_DATE, run_conf=TRAINING_CONF)
    assert str(run.state) == "success", _states(run)
    assert user.aliases() == {"challenger": "1"}
    tags = user.version("1").tags
    assert tags["mlops.gate.decision"] == "passed"
    assert (tags["mlops.task"], tags["mlops.primary_metric"]) == (
        dataset.task,
        {"binary": "auc", "multiclass": "log_loss", "regression": "rmse"}[dataset.task],
    )
    metrics = {m: float(tags[f"mlops.holdout_{m}"]) for m in TASK_METRICS[dataset.task]}
    run_metrics = user.client.get_run(user.version("1").run_id).data.metrics
    for name, value in metrics.items():
        assert run_metrics[f"holdout_{name}"] == pytest.approx(value, abs=1e-6), name
    assert metrics[dataset.metric] > dataset.floor, metrics
    return metrics


def _release(user: UserModel) -> dict[str, str]:
    """The deployment DAG through dag.test(), approved by a person through the REST API."""
    dag = user.dag("deployment")
    approver, outcome = airflow_api.answer_in_background(dag.dag_id, "Approve")
    run = dag.test(run_conf=RELEASE_CONF)
    approver.join(timeout=30)
    ((request, _response),) = outcome
    assert f"Deploy {user.dataset.model} v1" in request["subject"]
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["promote"] == "success" and states["rollback"] == "skipped", states
    return states


def _ledger(model: str) -> list[dict[str, Any]]:
    """The model's deployment audit ledger, as the release steps wrote it."""
    from mlops_steps.core.settings import load_settings
    from mlops_steps.release.ledger import read_ledger

    return read_ledger(load_settings().for_model(model))


def _answers(user: UserModel, frame_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The service's answers to the rows, checked to be in the task's shape."""
    assert user.service is not None
    with user.service.client() as http:
        answers = [http.post("/predict", json={"features": r}) for r in frame_rows]
    assert [a.status_code for a in answers] == [200] * len(frame_rows), answers[0].text
    bodies = [a.json() for a in answers]
    for body in bodies:
        assert (body["variant"], body["model_version"]) == ("stable", "1"), body
        task = user.dataset.task
        if task == "binary":
            assert 0.0 <= body["score"] <= 1.0 and "class" not in body and "value" not in body
        elif task == "multiclass":
            probabilities = body["probabilities"]
            assert list(probabilities) == ["0", "1", "2"]  # the contract's class order
            assert sum(probabilities.values()) == pytest.approx(1.0)
            assert body["class"] == max(probabilities, key=probabilities.__getitem__)
            assert body["score"] == probabilities[body["class"]]
        else:
            assert body["score"] == body["value"] and 0 < body["value"] < 400, body
    return bodies


def _refuses_the_impossible(user: UserModel, row: dict[str, Any]) -> None:
    assert user.service is not None
    field = user.dataset.limited
    with user.service.client() as http:
        response = http.post("/predict", json={"features": {**row, field: user.dataset.impossible}})
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [
        (["body", "features", field], user.dataset.violation)
    ]


@pytest.mark.parametrize("task", list(DATASETS))
def test_a_users_table_is_trained_released_and_served(  # noqa: PLR0917
    task: str,
    user_env: MlflowClient,
    mlflow_server: str,
    service_starter: Callable[..., Service],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = DATASETS[task]
    source, contract = _onboard(dataset, tmp_path, monkeypatch)
    service = _served_by(service_starter, mlflow_server, dataset.model, tmp_path, monkeypatch)
    assert httpx.get(f"{service.url}/ready", timeout=10).status_code == 503  # nothing yet
    user = UserModel(dataset, source, contract, _dags(monkeypatch), user_env, service)

    metrics = _train(user)
    print(f"{dataset.model} hold-out: {metrics}")  # the closing note quotes these

    _release(user)
    assert user.aliases() == {"champion": "1"}
    assert user.version("1").tags["mlops.deploy.status"] == "promoted"
    (entry,) = _ledger(dataset.model)
    assert (entry["decision"], entry["version"]) == ("promoted", "1")
    assert entry["analysis"]["passed"] is True and entry["analysis"]["task"] == task
    # No champion to replay: judged on its own hold-out, as the deployment chose.
    assert entry["analysis"]["golden_set"]["source"] == "candidate_holdout"
    traffic = httpx.get(f"{service.url}/ready", timeout=10).json()
    assert (traffic["stable"], traffic["canary"]) == ("1", None), traffic

    import pandas as pd

    rows = feature_records(pd.read_csv(source), 30)
    answers = _answers(user, rows)
    if task != "regression":  # the served model knows these rows' classes
        truth = pd.read_csv(source)["target"].head(30)
        predicted = (
            [int(a["score"] >= 0.5) for a in answers]
            if task == "binary"
            else [int(a["class"]) for a in answers]
        )
        assert (truth == predicted).mean() > 0.8
    else:  # closer to the truth than the label's spread (~77)
        truth = pd.read_csv(source)["target"].head(30)
        assert (truth - [a["value"] for a in answers]).abs().mean() < 70
    _refuses_the_impossible(user, rows[0])


def test_a_table_with_blanks_gets_a_nullable_feature_and_trains(
    user_env: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_steps.contract.loader import load_contract

    dataset = Dataset(**{**DATASETS["binary"].__dict__, "model": "byo_breast_cancer_blanks"})
    blank = "mean texture"
    source, contract = _onboard(dataset, tmp_path, monkeypatch, blanks=(blank, 0.1))
    loaded = load_contract(dataset.model)
    nullable = {f.name for f in loaded.features if f.nullable}
    assert nullable == {blank}
    user = UserModel(dataset, source, contract, _dags(monkeypatch), user_env, None)
    metrics = _train(user)
    print(f"{dataset.model} hold-out: {metrics}")
    # The model carries it: its feature spec (what the service validates requests with).
    logged = user.client.download_artifacts(
        user.version("1").run_id, "feature_spec.json", str(tmp_path)
    )
    spec = json.loads(Path(logged).read_text())
    assert [f["name"] for f in spec["features"] if f.get("nullable")] == [blank]
