"""The training steps on tables no one here wrote: scikit-learn's bundled breast cancer (binary),
wine (multiclass) and diabetes (regression) data, each written to a CSV with a hand-written
contract, through ingest -> validate -> train -> evaluate -> gate -> register against the real
MLflow server. Plus: a wrong label value stops validate, and a contract with nullable features
trains on data with missing values."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops_steps.cli import main as cli
from mlops_steps.common.storage import Partition
from mlops_steps.contract.loader import load_contract
from mlops_steps.core.settings import load_settings

STEPS = ("ingest", "validate", "train", "evaluate", "gate", "register")


def _frame(loader: str) -> pd.DataFrame:
    from sklearn import datasets

    frame: pd.DataFrame = getattr(datasets, loader)(as_frame=True).frame
    return frame


def _features_yaml(frame: pd.DataFrame, *, nullable: tuple[str, ...] = ()) -> str:
    lines = []
    for column in frame.columns.drop("target"):
        low, high = float(frame[column].min()), float(frame[column].max())
        limits = "{min: 0}" if low >= 0 else f"{{min: {low * 3:.4f}, max: {high * 3:.4f}}}"
        extra = ", nullable: true" if column in nullable else ""
        lines.append(f'  - {{name: "{column}", kind: float, limits: {limits}{extra}}}')
    return "\n".join(lines)


def _contract_yaml(name: str, source: Path, frame: pd.DataFrame, task_block: str, **kw: Any) -> str:
    return f"""# Written by hand in the test (not by contract infer).
name: {name}
description: {name} from scikit-learn's bundled data
source: {source}
label: target
{task_block}
features:
{_features_yaml(frame, **kw)}
training: {{min_data_in_leaf: 5, num_leaves: 15, max_rounds: 300}}
validation: {{min_rows: 100}}
"""


BREAST_CANCER = """task: binary
classes: [1, 0]
positive_class: 0   # malignant
metrics: {primary: auc}
gate:
  checks:
    - {metric: auc, threshold: 0.95, min_absolute_change: -0.02}
    - {metric: accuracy, threshold: 0.9}
  max_latency_ms: 1000"""
WINE = """task: multiclass
classes: [0, 1, 2]
gate:
  checks:
    - {metric: log_loss, threshold: 0.5}
    - {metric: accuracy, threshold: 0.85}
  max_latency_ms: 1000"""
DIABETES = """task: regression
metrics: {primary: rmse}
gate:
  checks:
    - {metric: r2, threshold: 0.3}
    - {metric: rmse, threshold: 70, min_relative_change: -0.05}
  max_latency_ms: 1000
  max_champion_collapse: 15"""


@pytest.fixture
def model_dir(
    mlflow_server: str, mlops_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., str]]:
    """``make(kind, frame, task_block, **yaml_options)`` writes the CSV and the contract of a
    model with a name unique to this test and makes it the steps' model."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MLOPS_MODELS_DIR", str(models))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)

    def make(kind: str, frame: pd.DataFrame, task_block: str, **options: Any) -> str:
        name = f"{kind}_{uuid.uuid4().hex[:8]}"
        source = tmp_path / f"{name}.csv"
        frame.to_csv(source, index=False)
        text = _contract_yaml(name, source, frame, task_block, **options)
        (models / f"{name}.yaml").write_text(text, encoding="utf-8")
        monkeypatch.setenv("MLOPS_MODEL_NAME", name)
        monkeypatch.setenv("MLOPS_EXPERIMENT", f"exp-{name}")
        return name

    yield make


def _run(partition: str, *, steps: tuple[str, ...] = STEPS) -> list[int]:
    extra = {"evaluate": ("--bootstrap-resamples", "200")}
    return [cli.main([s, "--partition", partition, *extra.get(s, ())]) for s in steps]


def _result(partition: str, step: str) -> dict[str, Any]:
    path = Partition.of(load_settings().dataset_root, partition).result(step)
    return json.loads(path.read_text())


def _registered(name: str) -> tuple[Any, Any]:
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version_by_alias(name, "challenger")
    return version, client.get_run(str(version.run_id))


def test_breast_cancer_binary(model_dir: Callable[..., str]) -> None:
    name = model_dir("breast_cancer", _frame("load_breast_cancer"), BREAST_CANCER)
    assert _run("p1") == [0] * 6
    manifest = json.loads(Partition.of(load_settings().dataset_root, "p1").manifest.read_text())
    assert manifest["source"].endswith(f"{name}.csv")  # the contract's source by default
    evaluation = _result("p1", "evaluate")["challenger"]
    assert evaluation["auc"] > 0.95 and evaluation["accuracy"] > 0.9
    version, run = _registered(name)
    assert version.tags["mlops.task"] == "binary"
    assert version.tags["mlops.primary_metric"] == "auc"
    for metric in ("auc", "log_loss", "accuracy", "f1"):
        assert float(version.tags[f"mlops.holdout_{metric}"]) == pytest.approx(
            evaluation[metric], abs=1e-6
        )
        assert f"holdout_{metric}" in run.data.metrics
    plots = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/calibration.png" in plots and "plots/roc_curve.png" in plots

    # The served output is P(malignant): the positive class is label 0 here.
    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    frame = _frame("load_breast_cancer")
    scores = model.predict(frame.drop(columns="target"))
    assert scores.ndim == 1
    assert scores[frame["target"] == 0].mean() > 0.8
    assert scores[frame["target"] == 1].mean() < 0.2
    spec = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/feature_spec.json")
    assert spec["task"] == "binary" and spec["positive_class"] == "0"
    assert "score_buckets" not in spec

    # A second model on the same data: compared with the champion on the primary metric.
    MlflowClient().set_registered_model_alias(name, "champion", version.version)
    assert cli.main(["ingest", "--partition", "p2"]) == 0
    assert _run("p2", steps=STEPS[1:3]) == [0, 0]
    assert cli.main(["train", "--partition", "p2", "--learning-rate", "0.1"]) == 0
    assert _run("p2", steps=STEPS[3:]) == [0, 0, 0]
    comparison = _result("p2", "evaluate")["comparison"]
    assert comparison["metric"] == "auc"
    assert (
        comparison["auc_delta_ci_low"] <= comparison["auc_delta"] <= comparison["auc_delta_ci_high"]
    )
    gate = _result("p2", "gate")
    assert "max_auc_drop_vs_champion" in {c["check"] for c in gate["checks"]}


def test_wine_multiclass(model_dir: Callable[..., str]) -> None:
    name = model_dir("wine", _frame("load_wine"), WINE)
    assert _run("p1") == [0] * 6
    evaluation = _result("p1", "evaluate")
    assert evaluation["challenger"]["accuracy"] > 0.85
    assert evaluation["challenger"]["macro_f1"] > 0.85
    assert evaluation["challenger"]["log_loss"] < 0.5
    assert set(evaluation["challenger_per_class"]) == {
        f"{m}__{c}" for m in ("precision", "recall", "f1") for c in "012"
    }
    version, run = _registered(name)
    assert version.tags["mlops.task"] == "multiclass"
    assert version.tags["mlops.primary_metric"] == "log_loss"
    assert {k for k in version.tags if k.startswith("mlops.holdout_")} == {
        "mlops.holdout_log_loss",
        "mlops.holdout_macro_f1",
        "mlops.holdout_accuracy",
    }
    assert "valid_recall__2" in run.data.metrics
    plots = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/feature_importance.png"}

    model = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    frame = _frame("load_wine")
    probabilities = model.predict(frame.drop(columns="target"))
    assert probabilities.shape == (len(frame), 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities.argmax(axis=1) == frame["target"]).mean() > 0.9


def test_diabetes_regression(model_dir: Callable[..., str]) -> None:
    name = model_dir("diabetes", _frame("load_diabetes"), DIABETES)
    assert _run("p1") == [0] * 6
    evaluation = _result("p1", "evaluate")["challenger"]
    assert evaluation["r2"] > 0.3 and evaluation["rmse"] < 70
    manifest = json.loads(Partition.of(load_settings().dataset_root, "p1").manifest.read_text())
    assert "_row_id" in manifest["summary"]["columns"]  # no id column: one derived from content
    version, run = _registered(name)
    assert version.tags["mlops.task"] == "regression"
    assert version.tags["mlops.primary_metric"] == "rmse"
    assert float(version.tags["mlops.holdout_r2"]) == pytest.approx(evaluation["r2"], abs=1e-6)
    plots = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert "plots/residuals.png" in plots
    spec = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/feature_spec.json")
    buckets = spec["score_buckets"]
    assert buckets == sorted(set(buckets)) and 5 <= len(buckets) <= 9
    frame = _frame("load_diabetes")
    assert frame["target"].min() < buckets[0] < buckets[-1] < frame["target"].max()
    values = mlflow.pyfunc.load_model(f"models:/{name}@challenger").predict(
        frame.drop(columns="target")
    )
    assert values.ndim == 1 and np.corrcoef(values, frame["target"])[0, 1] > 0.6


def test_a_wrong_label_value_fails_validation(model_dir: Callable[..., str]) -> None:
    frame = _frame("load_wine")
    frame.loc[:4, "target"] = 7  # no such class
    model_dir("wine", frame, WINE)
    assert _run("bad", steps=STEPS[:2]) == [0, 2]
    failed = _result("bad", "validate")["failed_expectations"]
    assert any(
        f.startswith("expect_column_values_to_be_in_set(target): 5 unexpected") for f in failed
    )


def test_nullable_features_with_missing_values_train(model_dir: Callable[..., str]) -> None:
    frame = _frame("load_breast_cancer")
    blanked = frame.sample(frac=0.1, random_state=0).index
    frame.loc[blanked, "mean radius"] = np.nan
    name = model_dir("bc_nulls", frame, BREAST_CANCER, nullable=("mean radius",))
    assert _run("p1") == [0] * 6
    assert _result("p1", "evaluate")["challenger"]["auc"] > 0.95
    version, _ = _registered(name)
    assert version.tags["mlops.gate.decision"] == "passed"
    spec = load_contract(name).feature_spec()
    assert next(f for f in spec["features"] if f["name"] == "mean radius")["nullable"] is True
    # Without nullable: the same data stops at validate, naming the column.
    model_dir("bc_strict", frame, BREAST_CANCER)
    assert _run("strict", steps=STEPS[:2]) == [0, 2]
    failed = _result("strict", "validate")["failed_expectations"]
    assert any("expect_column_values_to_not_be_null(mean radius)" in f for f in failed)
