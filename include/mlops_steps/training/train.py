"""train: fit LightGBM on the partition and record everything about it in MLflow.

A training run is identified by its *training key*: the data hash, the training parameters and the
code version. A retry, or a re-run of the same logical date, finds the finished MLflow run with that
key and returns it instead of training again, so nothing is logged or registered twice. Runs of the
key left RUNNING by a killed attempt are marked KILLED first (see run_lifecycle).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import warnings
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.metrics import classification_metrics, split_frame
from mlops_steps.common.storage import Partition, load_partition_frame, write_json
from mlops_steps.common.tracking import connect
from mlops_steps.contract.schema import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    LABEL_COLUMN,
    SLICE_COLUMNS,
    feature_spec,
    training_ranges,
)
from mlops_steps.core.policies import TrainParams
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.training import pyfunc_model, run_lifecycle

_MODEL_REQUIREMENTS = ("lightgbm", "pandas", "numpy")


def _categories() -> dict[str, list[str]]:
    spec = feature_spec()
    return {f["name"]: f["categories"] for f in spec["features"] if f["kind"] == "category"}


def model_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return pyfunc_model.prepare_frame(frame, FEATURE_NAMES, _categories())


def training_key(data_sha256: str, params: TrainParams) -> str:
    payload = json.dumps(
        {"data": data_sha256, "params": asdict(params), "code": code_version()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _airflow_tags() -> dict[str, str]:
    # Set by both runners from the Airflow context; absent when a step is run by hand.
    return {
        tag: os.environ[env]
        for tag, env in (
            ("mlops.airflow_dag_id", "MLOPS_AIRFLOW_DAG_ID"),
            ("mlops.airflow_run_id", "MLOPS_AIRFLOW_RUN_ID"),
        )
        if os.environ.get(env)
    }


def _attempt() -> str:
    """Who this attempt is, for the tag on runs it retires."""
    run_id = os.environ.get("MLOPS_AIRFLOW_RUN_ID") or "run by hand"
    return f"{run_id}, pid {os.getpid()} on {socket.gethostname()}"


def _finished_run_after_retiring_stale(settings: Settings, client: Any, key: str) -> Any | None:
    """Mark runs of ``key`` a dead attempt left RUNNING as KILLED; the key's FINISHED run."""
    import mlflow

    mlflow.set_experiment(settings.experiment_name)
    experiment_id = client.get_experiment_by_name(settings.experiment_name).experiment_id
    run_lifecycle.retire_stale_runs(client, experiment_id, key, by=_attempt())
    return run_lifecycle.finished_run(client, experiment_id, key)


def _reuse(run: Any, partition: Partition) -> dict[str, Any]:
    result = json.loads(run.data.tags["mlops.train_result"])
    result["reused"] = True
    write_json(partition.result("train"), result)
    return result


def _plots(labels: np.ndarray, scores: np.ndarray, booster: Any) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    figures: dict[str, Any] = {}
    fpr, tpr, _ = roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    ax.legend()
    figures["plots/roc_curve.png"] = fig

    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    ax.axhline(labels.mean(), linestyle="--", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (validation)")
    ax.legend()
    figures["plots/pr_curve.png"] = fig

    observed, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted", ylabel="observed rate", title="Calibration (validation)")
    ax.legend()
    figures["plots/calibration.png"] = fig

    gains = booster.feature_importance(importance_type="gain")
    order = np.argsort(gains)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.barh(np.array(booster.feature_name())[order], gains[order])
    ax.set(xlabel="total gain", title="Feature importance")
    fig.tight_layout()
    figures["plots/feature_importance.png"] = fig
    return figures


def _slice_metrics(valid: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for column in SLICE_COLUMNS:
        for value, index in valid.groupby(column, observed=True).indices.items():
            labels = valid[LABEL_COLUMN].to_numpy()[index]
            if len(index) >= 100 and 0 < labels.mean() < 1:
                metrics = classification_metrics(labels, scores[index])
                out[f"valid_auc__{column}__{value}"] = metrics["auc"]
    return out


def _model_requirements(mlflow_version: str) -> list[str]:
    """The logged model's pins. MLflow by its module's version, as MLflow pins itself: the task
    image installs mlflow-skinny, which has no distribution named "mlflow" to look up."""
    pins = [f"{name}=={metadata.version(name)}" for name in _MODEL_REQUIREMENTS]
    return [f"mlflow=={mlflow_version}", *pins]


def run_train(settings: Settings, partition_key: str, params: TrainParams) -> dict[str, Any]:
    import lightgbm as lgb
    import mlflow
    from mlflow.models import infer_signature

    partition = Partition.of(settings.dataset_root, partition_key)
    frame, manifest = load_partition_frame(partition)
    data_sha256 = manifest["data_sha256"]
    key = training_key(data_sha256, params)

    client = connect()
    existing = _finished_run_after_retiring_stale(settings, client, key)
    if existing is not None:
        return _reuse(existing, partition)

    splits = split_frame(frame)
    x_train, x_valid = model_frame(splits.train), model_frame(splits.valid)
    y_train = splits.train[LABEL_COLUMN].to_numpy()
    y_valid = splits.valid[LABEL_COLUMN].to_numpy()
    lgb_params = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "seed": params.seed,
        "num_threads": params.num_threads,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    tags = {
        "mlops.training_key": key,
        "mlops.data_sha256": data_sha256,
        "mlops.data_path": str(partition.data),
        "mlops.partition": partition.key,
        "mlops.code_sha": code_version(),
        "mlops.model_name": settings.model_name,
        **_airflow_tags(),
    }
    with (
        run_lifecycle.sigterm_ends_run_killed(),
        mlflow.start_run(run_name=f"train-{partition.key}", tags=tags) as run,
    ):
        mlflow.log_params({**asdict(params), "rows": len(frame), "features": len(FEATURE_NAMES)})
        train_set = lgb.Dataset(x_train, y_train, categorical_feature=list(CATEGORICAL_FEATURES))
        valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
        history: dict[str, Any] = {}
        booster = lgb.train(
            lgb_params,
            train_set,
            num_boost_round=params.max_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(params.early_stopping_rounds, verbose=False),
                lgb.record_evaluation(history),
            ],
        )
        for step, (auc, loss) in enumerate(
            zip(history["valid"]["auc"], history["valid"]["binary_logloss"], strict=True)
        ):
            if step % 10 == 0 or step == booster.best_iteration - 1:
                mlflow.log_metrics({"curve_valid_auc": auc, "curve_valid_logloss": loss}, step)

        scores = np.asarray(booster.predict(x_valid, num_iteration=booster.best_iteration))
        valid_metrics = {
            f"valid_{k}": v for k, v in classification_metrics(y_valid, scores).items()
        }
        metrics = {
            **valid_metrics,
            **_slice_metrics(splits.valid, scores),
            "best_iteration": float(booster.best_iteration),
            "train_rows": float(len(splits.train)),
            "valid_rows": float(len(splits.valid)),
        }
        mlflow.log_metrics(metrics)
        for path, figure in _plots(y_valid, scores, booster).items():
            mlflow.log_figure(figure, path)

        with tempfile.TemporaryDirectory() as tmp:
            booster_path = Path(tmp) / "booster.txt"
            booster.save_model(str(booster_path), num_iteration=booster.best_iteration)
            spec_path = Path(tmp) / "feature_spec.json"
            # With each numeric feature's training range (serving flags values outside it).
            spec_path.write_text(json.dumps(feature_spec(training_ranges(splits.train)), indent=2))
            mlflow.log_artifact(str(spec_path))
            mlflow.log_dict(manifest, "data/manifest.json")
            example = splits.valid.loc[:, list(FEATURE_NAMES)].head(5)
            with warnings.catch_warnings():
                # MLflow hints that integer columns cannot hold missing values; the data contract
                # forbids nulls and serving validates requests against the feature spec.
                warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
                signature = infer_signature(example, scores[:5])
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=pyfunc_model.__file__,
                artifacts={"booster": str(booster_path), "feature_spec": str(spec_path)},
                signature=signature,
                input_example=example,
                pip_requirements=_model_requirements(mlflow.__version__),
            )
        result = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "model_uri": model_info.model_uri,
            "training_key": key,
            "data_sha256": data_sha256,
            "partition": partition.key,
            "metrics": valid_metrics,
            "best_iteration": booster.best_iteration,
        }
        # Written last: a run carrying its result tag finished everything above.
        other = run_lifecycle.claim_finish(client, run.info, key)
        if other is None:
            mlflow.set_tag("mlops.train_result", json.dumps(result, sort_keys=True))
    if other is not None:  # an overlapping attempt finished the same key first
        return _reuse(other, partition)
    result["reused"] = False
    write_json(partition.result("train"), result)
    return result
