"""The DAG factory: each contract in MLOPS_MODELS_DIR gets its own five DAGs, named, scheduled,
pooled and parametrised from its contract; a broken contract is an import error naming its file,
key and fix, and the other models keep their DAGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.dags.helpers import load_dags, write_models

KINDS = ("training", "deployment", "monitoring", "rollback", "batch_scoring")
# The second model's overrides, one per section the DAGs read.
OVERRIDES = """
training: {seed: 7}
validation: {min_rows: 5000}
canary: {steps: "25,100", rounds: 5}
monitoring: {window_hours: 6, drift_share: 0.3}
schedules: {training: null, monitoring: "45 */2 * * *"}
"""


def _bag(monkeypatch: pytest.MonkeyPatch, models: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    from mlops_steps.core.settings import get_settings
    from tests.dags.helpers import DAGS

    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("MLOPS_RUNNER", "local")
    get_settings.cache_clear()
    try:
        return DagBag(dag_folder=str(DAGS))
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    models = write_models(tmp_path_factory.mktemp("models"), ["churn", "upsell"], extra=OVERRIDES)
    with pytest.MonkeyPatch.context() as monkeypatch:
        bag = _bag(monkeypatch, models)
    assert bag.import_errors == {}, bag.import_errors
    return dict(bag.dags)


def test_each_model_gets_its_five_dags(two_models: dict[str, Any]) -> None:
    assert set(two_models) == {f"mlops_{k}__{m}" for k in KINDS for m in ("churn", "upsell")}
    for dag_id, dag in two_models.items():
        model = dag_id.rsplit("__", 1)[1]
        assert model in dag.tags and "mlops" in dag.tags, dag_id
        assert dag.fileloc.endswith(f"mlops_{dag_id.split('__')[0].removeprefix('mlops_')}.py")
        for task in dag.tasks:
            env = getattr(task, "env_vars", None)
            if env is not None:  # every step knows its model, experiment and Deployments
                assert env["MLOPS_MODEL_NAME"] == model, (dag_id, task.task_id)
                assert env["MLOPS_EXPERIMENT"] == f"{model}-training", (dag_id, task.task_id)
                if "MLOPS_STABLE_DEPLOYMENT" in env:
                    assert env["MLOPS_STABLE_DEPLOYMENT"] == f"{model}-serving-stable"
                    assert env["MLOPS_CANARY_DEPLOYMENT"] == f"{model}-serving-canary"
    monitor = two_models["mlops_monitoring__upsell"].get_task("monitor")
    assert monitor.env_vars["MLOPS_MONITORING_EXPERIMENT"] == "upsell-monitoring"


def test_each_model_has_its_own_assets_and_pool(two_models: dict[str, Any]) -> None:
    for model in ("churn", "upsell"):
        training = two_models[f"mlops_training__{model}"]
        deployment = two_models[f"mlops_deployment__{model}"]
        challenger = training.get_task("register").outlets[0]
        assert (challenger.name, challenger.uri) == (
            f"{model}_challenger",
            f"mlops://{model}/challenger",
        )
        woken_by = {a.uri for a in deployment.timetable.asset_condition.objects}
        assert woken_by == {f"mlops://{model}/release-candidate"}
        drift = two_models[f"mlops_monitoring__{model}"].get_task("announce_drift").outlets[0]
        assert drift.uri == f"mlops://{model}/drift-detected"
        pools = {t.pool for t in deployment.tasks} | {
            t.pool for t in two_models[f"mlops_rollback__{model}"].tasks
        }
        assert pools == {"default_pool", f"mlops_promotion__{model}"}
        assert deployment.get_task("wait_for_candidate").model_name == model


def test_params_and_schedules_follow_each_contract(two_models: dict[str, Any]) -> None:
    def defaults(dag_id: str) -> dict[str, Any]:
        dag = two_models[dag_id]
        return {name: dag.params.get_param(name).value for name in dag.params}

    churn, upsell = defaults("mlops_training__churn"), defaults("mlops_training__upsell")
    assert (churn["seed"], churn["min_rows"]) == (42, 1000)
    assert (upsell["seed"], upsell["min_rows"]) == (7, 5000)  # the contract's overrides
    assert json.loads(upsell["gate_checks"])[0] == {
        "metric": "auc",
        "threshold": 0.75,
        "min_absolute_change": -0.01,
    }
    churn, upsell = defaults("mlops_deployment__churn"), defaults("mlops_deployment__upsell")
    assert (churn["canary_steps"], churn["analysis_rounds"]) == ("5,25,50,100", 3)
    assert (upsell["canary_steps"], upsell["analysis_rounds"]) == ("25,100", 5)
    churn, upsell = defaults("mlops_monitoring__churn"), defaults("mlops_monitoring__upsell")
    assert (churn["window_hours"], churn["drift_share"]) == (1, 0.1)
    assert (upsell["window_hours"], upsell["drift_share"]) == (6, 0.3)
    # upsell's training runs only on events; its monitoring has its own cron.
    training = two_models["mlops_training__upsell"].timetable
    assert type(training).__name__ == "AssetTriggeredTimetable"
    assert two_models["mlops_monitoring__upsell"].timetable.expression == "45 */2 * * *"
    assert two_models["mlops_monitoring__churn"].timetable.expression == "15 * * * *"


def test_a_broken_contract_is_an_import_error_and_the_others_keep_their_dags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    models = write_models(tmp_path / "models", ["churn", "upsell"])
    broken = models / "upsell.yaml"
    broken.write_text(broken.read_text().replace("primary: auc", "primary: rmse"))
    bag = _bag(monkeypatch, models)
    (error,) = (message for path, message in bag.import_errors.items() if "contracts" in path)
    assert [Path(path).name for path in bag.import_errors] == ["mlops_contracts.py"]
    assert f"{broken}: metrics.primary" in error  # the file and the key
    assert "'rmse' is not a binary metric" in error
    assert "use one of auc, log_loss, accuracy, f1" in error  # the fix
    assert set(bag.dags) == {f"mlops_{kind}__churn" for kind in KINDS}


def test_an_empty_models_directory_is_an_import_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bag = _bag(monkeypatch, tmp_path)
    assert bag.dags == {}
    (error,) = bag.import_errors.values()
    assert "holds no model contract" in error and "MLOPS_MODELS_DIR" in error


def test_the_shipped_models_directory_builds_churn(monkeypatch: pytest.MonkeyPatch) -> None:
    dags = load_dags(monkeypatch, "local")
    assert {f"mlops_{kind}__churn" for kind in KINDS} <= set(dags)


def test_settings_name_things_for_the_model_they_are_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Names derived from the model follow it; an override names one thing, or a template."""
    from mlops_steps.core.settings import load_settings

    for variable in ("MLOPS_EXPERIMENT", "MLOPS_STABLE_DEPLOYMENT", "MLOPS_PROMOTION_POOL"):
        monkeypatch.delenv(variable, raising=False)
    iris = load_settings().for_model("iris")
    assert (iris.experiment_name, iris.monitoring_experiment) == (
        "iris-training",
        "iris-monitoring",
    )
    assert (iris.deploy.stable_deployment, iris.deploy.canary_deployment) == (
        "iris-serving-stable",
        "iris-serving-canary",
    )
    assert iris.deploy.promotion_pool == "mlops_promotion__iris"
    assert iris.dataset_root.name == "iris" and iris.model_store.name == "iris"
    monkeypatch.setenv("MLOPS_EXPERIMENT", "team-a/{model}")
    monkeypatch.setenv("MLOPS_STABLE_DEPLOYMENT", "prod-stable")
    monkeypatch.setenv("MLOPS_PROMOTION_POOL", "releases")
    iris = load_settings().for_model("iris")
    assert iris.experiment_name == "team-a/iris"
    assert iris.deploy.stable_deployment == "prod-stable"  # a literal: one model's
    assert iris.deploy.promotion_pool == "releases"  # every model shares one slot


def test_the_approval_page_shows_the_tasks_metrics_and_renders_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page lists the task's metrics, primary first; a metric the candidate's tags lack
    reads n/a (templates render strictly: a missing key used to fail the approval task)."""
    from tests.dags.helpers import XCOMS, rendered

    approve = load_dags(monkeypatch, "local")["mlops_deployment__churn"].get_task("approve")
    monkeypatch.setitem(XCOMS["resolve"], "metrics", {"holdout_auc": 0.91, "holdout_f1": 0.6})
    for key in ("gate_reason", "shift", "data_sha256"):
        monkeypatch.setitem(XCOMS["resolve"], key, {"summary": "-", "report": "-"})
    monkeypatch.setitem(XCOMS["resolve"], "links", {"mlflow_run": "-", "data_docs": "-"})
    monkeypatch.setitem(XCOMS["resolve"], "review_reason", None)
    body = rendered(approve).body
    rows = [line for line in body.splitlines() if line.startswith("| ") and "value" not in line]
    assert rows == [
        "| AUC | 0.91 |",
        "| log loss | n/a |",
        "| accuracy | n/a |",
        "| F1 | 0.6 |",
        "| p95 latency (ms/row) | n/a |",
        "| AUC vs champion | n/a |",
    ]
