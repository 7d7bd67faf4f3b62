"""train: fit LightGBM on the partition and record everything about it in MLflow.

A training run is identified by its *training key*: the data hash, the training parameters, the
model's contract and the code version. A retry, or a re-run of the same logical date, finds the
finished MLflow run with that key and returns it instead of training again, so nothing is logged
or registered twice. Runs of the key left RUNNING by a killed attempt are marked KILLED first (see
run_lifecycle). The objective, the label encoding and the outputs follow the contract's task.
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

from mlops_steps.common.columnar import PartitionFile, plain_values
from mlops_steps.common.metrics import (
    encode_labels,
    id_column_of,
    per_class_metrics,
    split_masks,
    task_metrics,
)
from mlops_steps.common.storage import Partition, write_json
from mlops_steps.common.tracking import connect
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.policies import TrainParams
from mlops_steps.core.settings import Settings, code_version
from mlops_steps.training import plots, pyfunc_model, run_lifecycle

_MODEL_REQUIREMENTS = ("lightgbm", "pandas", "numpy")
#: LightGBM's objective and the metrics it records per round, by task; early stopping watches
#: the first (the loss: AUC saturates early on small, easy tables and stopped breast cancer
#: after 5 rounds at a log loss of 0.45).
OBJECTIVES: dict[str, tuple[str, list[str]]] = {
    "binary": ("binary", ["binary_logloss", "auc"]),
    "multiclass": ("multiclass", ["multi_logloss"]),
    "regression": ("regression", ["l2"]),
}
_CURVE_NAMES = {"auc": "curve_valid_auc", "binary_logloss": "curve_valid_logloss"}
_SLICE_MIN_ROWS = 100
#: Quantiles of the training predictions that bucket a regression model's served values.
_SCORE_QUANTILES = tuple(q / 10 for q in range(1, 10))


def model_frame(frame: pd.DataFrame, contract: ModelContract) -> pd.DataFrame:
    """The booster's input: the contract's features, encoded as the served model encodes them."""
    features, categories, booleans = pyfunc_model.spec_encoding(contract.feature_spec())
    return pyfunc_model.prepare_frame(frame, features, categories, booleans, "float32")


def model_matrix(
    frame: pd.DataFrame, contract: ModelContract, *, consume: bool = False
) -> np.ndarray:
    """:func:`model_frame` as the row-major float32 matrix LightGBM bins, filled a column at a
    time: a category is its index in the contract's vocabulary (what the service and the pyfunc
    model feed the booster), missing as NaN. Built here because LightGBM's own pandas path makes
    a float64 copy of every category column and then the float matrix (~3x this one).
    ``consume``: drop each column from ``frame`` once encoded, so the raw rows shrink as the
    matrix fills (at 10M rows the difference between 1.9 and 2.8 GB peak)."""
    features, categories, booleans = pyfunc_model.spec_encoding(contract.feature_spec())
    matrix = np.empty((len(frame), len(features)), dtype=np.float32)
    for position, name in enumerate(features):
        raw = frame.pop(name).to_frame() if consume else frame[[name]]
        values = pyfunc_model.prepare_frame(raw, [name], categories, booleans, "float32")[name]
        del raw
        if isinstance(values.dtype, pd.CategoricalDtype):
            codes = values.cat.codes.to_numpy()
            matrix[:, position] = np.where(codes >= 0, codes, np.nan)
        else:
            matrix[:, position] = values.to_numpy(dtype=np.float32, na_value=np.nan)
    return matrix


def _split_rows(data: PartitionFile, contract: ModelContract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and valid rows of the columns training uses (features, label, slices): the
    split comes from the id column alone, and the hold-out's rows are never read."""
    masks = split_masks(data.split_buckets(id_column_of(contract)))
    columns = list(dict.fromkeys([*contract.feature_names, contract.label, *contract.slices]))
    return data.read(columns, masks["train"]), data.read(columns, masks["valid"])


def training_key(data_sha256: str, params: TrainParams, contract: ModelContract) -> str:
    payload = json.dumps(
        {
            "data": data_sha256,
            "params": asdict(params),
            "code": code_version(),
            "contract": contract.fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def lightgbm_params(params: TrainParams, contract: ModelContract) -> dict[str, Any]:
    objective, metrics = OBJECTIVES[contract.task]
    out: dict[str, Any] = {"objective": objective, "metric": metrics}
    if contract.task == "multiclass":
        out["num_class"] = len(contract.classes)
    return out | {
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


def _slice_metrics(
    valid: pd.DataFrame, labels: np.ndarray, outputs: np.ndarray, contract: ModelContract
) -> dict[str, float]:
    """The primary metric per value of each slice column (slices big enough to judge)."""
    out: dict[str, float] = {}
    metric = contract.primary_metric
    for column in contract.slices:
        for value, index in valid.groupby(column, observed=True).indices.items():
            if len(index) < _SLICE_MIN_ROWS:
                continue
            if contract.task == "binary" and not 0 < labels[index].mean() < 1:
                continue
            metrics = task_metrics(contract.task, labels[index], outputs[index])
            out[f"valid_{metric}__{column}__{value}"] = metrics[metric]
    return out


def score_buckets(values: np.ndarray) -> list[float]:
    """Regression: ascending unique quantiles 0.1..0.9 of the training predictions (the service's
    histogram buckets for the served values)."""
    quantiles = np.quantile(np.asarray(values, dtype=float), _SCORE_QUANTILES)
    return sorted({round(float(q), 6) for q in quantiles})


def _log_curves(history: dict[str, Any], best_iteration: int) -> None:
    import mlflow

    curves: dict[str, list[float]] = history.get("valid", {})
    rounds = len(next(iter(curves.values()), []))
    for step in range(rounds):
        if step % 10 == 0 or step == best_iteration - 1:
            values = {_CURVE_NAMES.get(n, f"curve_valid_{n}"): v[step] for n, v in curves.items()}
            mlflow.log_metrics(values, step)


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


def _model_requirements(mlflow_version: str) -> list[str]:
    """The logged model's pins. MLflow by its module's version, as MLflow pins itself: the task
    image installs mlflow-skinny, which has no distribution named "mlflow" to look up."""
    pins = [f"{name}=={metadata.version(name)}" for name in _MODEL_REQUIREMENTS]
    return [f"mlflow=={mlflow_version}", *pins]


def _log_model(
    booster: Any,
    spec: dict[str, Any],
    manifest: dict[str, Any],
    example: pd.DataFrame,
    example_outputs: np.ndarray,
) -> Any:
    """The booster and its feature spec as an MLflow pyfunc model of the active run."""
    import mlflow
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        booster_path = Path(tmp) / "booster.txt"
        booster.save_model(str(booster_path), num_iteration=booster.best_iteration)
        spec_path = Path(tmp) / "feature_spec.json"
        # With each numeric feature's training range (serving flags values outside it).
        spec_path.write_text(json.dumps(spec, indent=2))
        mlflow.log_artifact(str(spec_path))
        mlflow.log_dict(manifest, "data/manifest.json")
        with warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold missing values; nullable features
            # arrive as floats, and serving validates requests against the spec.
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            signature = infer_signature(example, example_outputs)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc_model.__file__,
            artifacts={"booster": str(booster_path), "feature_spec": str(spec_path)},
            signature=signature,
            input_example=example,
            pip_requirements=_model_requirements(mlflow.__version__),
        )


def run_train(settings: Settings, partition_key: str, params: TrainParams) -> dict[str, Any]:
    """Train the contract's model on the partition's train split (early stopping on valid).

    ``params`` are used as given: the CLI applies the contract's ``training`` overrides under
    the flags a run sets (``contract.policy("training", settings.training)``)."""
    import lightgbm as lgb
    import mlflow

    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    data = PartitionFile.open(partition)
    manifest = data.manifest
    data_sha256 = manifest["data_sha256"]
    key = training_key(data_sha256, params, contract)

    client = connect()
    existing = _finished_run_after_retiring_stale(settings, client, key)
    if existing is not None:
        return _reuse(existing, partition)

    train_rows, valid_rows = _split_rows(data, contract)
    y_train = encode_labels(train_rows[contract.label], contract)
    y_valid = encode_labels(valid_rows[contract.label], contract)
    ranges, train_count = contract.training_ranges(train_rows), len(train_rows)
    # The raw training rows are not needed again: they are consumed into what LightGBM bins.
    x_train = model_matrix(train_rows, contract, consume=True)
    del train_rows
    x_valid = model_matrix(valid_rows, contract)
    tags = {
        "mlops.training_key": key,
        "mlops.data_sha256": data_sha256,
        "mlops.data_path": str(partition.data),
        "mlops.partition": partition.key,
        "mlops.code_sha": code_version(),
        "mlops.model_name": settings.model_name,
        "mlops.task": contract.task,
        "mlops.primary_metric": contract.primary_metric,
        "mlops.contract_fingerprint": contract.fingerprint(),
        **_airflow_tags(),
    }
    with (
        run_lifecycle.sigterm_ends_run_killed(),
        mlflow.start_run(run_name=f"train-{partition.key}", tags=tags) as run,
    ):
        mlflow.log_params(
            {**asdict(params), "rows": data.rows, "features": len(contract.feature_names)}
        )
        # free_raw_data: LightGBM lets go of the matrix once it is binned; so do we (only
        # regression predicts the training rows again, for its score buckets).
        train_set = lgb.Dataset(
            x_train,
            y_train,
            feature_name=list(contract.feature_names),
            categorical_feature=list(contract.categorical_features),
            free_raw_data=True,
        )
        if contract.task != "regression":
            del x_train
        valid_set = lgb.Dataset(x_valid, y_valid, reference=train_set)
        history: dict[str, Any] = {}
        booster = lgb.train(
            lightgbm_params(params, contract),
            train_set,
            num_boost_round=params.max_rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(
                    params.early_stopping_rounds, first_metric_only=True, verbose=False
                ),
                lgb.record_evaluation(history),
            ],
        )
        _log_curves(history, booster.best_iteration)

        outputs = np.asarray(booster.predict(x_valid, num_iteration=booster.best_iteration))
        valid_metrics = {
            f"valid_{k}": v for k, v in task_metrics(contract.task, y_valid, outputs).items()
        }
        per_class = (
            per_class_metrics(y_valid, outputs, contract.class_labels)
            if contract.task == "multiclass"
            else {}
        )
        metrics = {
            **valid_metrics,
            **{f"valid_{k}": v for k, v in per_class.items()},
            **_slice_metrics(valid_rows, y_valid, outputs, contract),
            "best_iteration": float(booster.best_iteration),
            "train_rows": float(train_count),
            "valid_rows": float(len(valid_rows)),
        }
        mlflow.log_metrics(metrics)
        figures = plots.task_plots(contract.task, y_valid, outputs, booster, contract.class_labels)
        for path, figure in figures.items():
            mlflow.log_figure(figure, path)
            plots.close(figure)  # pyplot keeps every figure it drew until closed

        spec = contract.feature_spec(ranges)
        if contract.task == "regression":
            spec["score_buckets"] = score_buckets(
                np.asarray(booster.predict(x_train, num_iteration=booster.best_iteration))
            )
        example = plain_values(valid_rows.loc[:, list(contract.feature_names)].head(5))
        model_info = _log_model(booster, spec, manifest, example, outputs[:5])
        result = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "model_uri": model_info.model_uri,
            "training_key": key,
            "data_sha256": data_sha256,
            "partition": partition.key,
            "task": contract.task,
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
