"""evaluate: score the challenger and the current champion on the same hold-out rows, with the
metrics of the model's task (binary: auc, log_loss, accuracy, f1; multiclass: log_loss, macro_f1,
accuracy and per class precision/recall/F1; regression: rmse, mae, r2)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.metrics import (
    encode_labels,
    id_column_of,
    paired_bootstrap_delta,
    per_class_metrics,
    split_frame,
    task_metrics,
)
from mlops_steps.common.storage import Partition, load_partition_frame, read_json, write_json
from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.settings import Settings

LATENCY_WARMUP, LATENCY_CALLS = 20, 200


def single_row_latency_ms(model: Any, rows: pd.DataFrame) -> dict[str, float]:
    """Per-row latency of the model as MLflow loads it, one row per call (what serving does)."""
    singles = [rows.iloc[[i % len(rows)]] for i in range(LATENCY_WARMUP + LATENCY_CALLS)]
    for row in singles[:LATENCY_WARMUP]:
        model.predict(row)
    timings = np.empty(LATENCY_CALLS)
    for i, row in enumerate(singles[LATENCY_WARMUP:]):
        start = time.perf_counter()
        model.predict(row)
        timings[i] = (time.perf_counter() - start) * 1000.0
    return {
        "latency_p50_ms": float(np.percentile(timings, 50)),
        "latency_p95_ms": float(np.percentile(timings, 95)),
    }


def _number(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def _outputs(model: Any, features: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(features), dtype=float)


def _champion(
    client: Any,
    settings: Settings,
    *,
    contract: ModelContract,
    features: pd.DataFrame,
    labels: np.ndarray,
    challenger: tuple[np.ndarray, dict[str, float]],
    resamples: int,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The champion's metrics on the same hold-out and the paired bootstrap of the primary
    metric's delta (challenger - champion), or None without a champion."""
    import mlflow

    version = version_by_alias(client, settings.model_name, CHAMPION)
    if version is None:
        return None
    uri = f"models:/{settings.model_name}/{version.version}"
    outputs = _outputs(mlflow.pyfunc.load_model(uri), features)
    metrics = task_metrics(contract.task, labels, outputs)
    metric = contract.primary_metric
    comparison: dict[str, Any] = {
        "metric": metric,
        "greater_is_better": contract.greater_is_better,
        **paired_bootstrap_delta(
            metric, contract.task, labels, challenger[0], outputs, resamples=resamples
        ),
        f"{metric}_delta": challenger[1][metric] - metrics[metric],
    }
    tags = dict(version.tags or {})
    champion = {
        "version": str(version.version),
        "run_id": version.run_id,
        "model_uri": uri,
        **metrics,
        # What it scored on its own hold-out when it was trained (the gate's collapse check).
        **{f"training_{m}": _number(tags.get(f"mlops.holdout_{m}")) for m in contract.metrics},
    }
    return champion, comparison


def run_evaluate(settings: Settings, partition_key: str, resamples: int) -> dict[str, Any]:
    """Score the challenger (and the champion, if any) on the partition's hold-out with the
    task's metrics; log them to the training run as ``holdout_<metric>``."""
    import mlflow

    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    trained = read_json(partition.result("train"), produced_by="train")
    frame, manifest = load_partition_frame(partition)
    holdout = split_frame(frame, id_column_of(contract)).holdout
    features = holdout.loc[:, list(contract.feature_names)]
    labels = encode_labels(holdout[contract.label], contract)

    client = connect()
    challenger = mlflow.pyfunc.load_model(trained["model_uri"])
    challenger_outputs = _outputs(challenger, features)
    challenger_metrics = task_metrics(contract.task, labels, challenger_outputs)
    latency = single_row_latency_ms(challenger, features.head(50))
    per_class = (
        per_class_metrics(labels, challenger_outputs, contract.class_labels)
        if contract.task == "multiclass"
        else {}
    )

    result: dict[str, Any] = {
        "partition": partition.key,
        "data_sha256": manifest["data_sha256"],
        "run_id": trained["run_id"],
        "model_uri": trained["model_uri"],
        "task": contract.task,
        "primary_metric": contract.primary_metric,
        "metrics": list(contract.metrics),
        "holdout_rows": len(holdout),
        "challenger": {**challenger_metrics, **latency},
        "challenger_per_class": per_class,
        "champion": None,
        "comparison": None,
    }
    logged = {f"holdout_{k}": v for k, v in {**challenger_metrics, **per_class}.items()} | latency

    found = _champion(
        client,
        settings,
        contract=contract,
        features=features,
        labels=labels,
        challenger=(challenger_outputs, challenger_metrics),
        resamples=resamples,
    )
    if found is not None:
        result["champion"], result["comparison"] = found
        logged |= {f"champion_holdout_{m}": result["champion"][m] for m in challenger_metrics}
        prefix = f"{contract.primary_metric}_delta"
        logged |= {k: v for k, v in result["comparison"].items() if k.startswith(prefix)}

    client.log_batch(
        trained["run_id"],
        metrics=[
            mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
            for k, v in logged.items()
        ],
    )
    write_json(partition.result("evaluate"), result)
    return result
