"""evaluate: score the challenger and the current champion on the same hold-out rows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.metrics import (
    classification_metrics,
    paired_bootstrap_auc_delta,
    split_frame,
)
from mlops_steps.common.storage import Partition, load_partition_frame, read_json, write_json
from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
from mlops_steps.contract.schema import FEATURE_NAMES, LABEL_COLUMN
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


def run_evaluate(settings: Settings, partition_key: str, resamples: int) -> dict[str, Any]:
    import mlflow

    partition = Partition.of(settings.dataset_root, partition_key)
    trained = read_json(partition.result("train"), produced_by="train")
    frame, manifest = load_partition_frame(partition)
    holdout = split_frame(frame).holdout
    features = holdout.loc[:, list(FEATURE_NAMES)]
    labels = holdout[LABEL_COLUMN].to_numpy()

    client = connect()
    challenger = mlflow.pyfunc.load_model(trained["model_uri"])
    challenger_scores = np.asarray(challenger.predict(features), dtype=float)
    challenger_metrics = classification_metrics(labels, challenger_scores)
    latency = single_row_latency_ms(challenger, features.head(50))

    result: dict[str, Any] = {
        "partition": partition.key,
        "data_sha256": manifest["data_sha256"],
        "run_id": trained["run_id"],
        "model_uri": trained["model_uri"],
        "holdout_rows": len(holdout),
        "challenger": {**challenger_metrics, **latency},
        "champion": None,
        "comparison": None,
    }
    logged = {f"holdout_{k}": v for k, v in challenger_metrics.items()} | latency

    champion_version = version_by_alias(client, settings.model_name, CHAMPION)
    if champion_version is not None:
        champion_uri = f"models:/{settings.model_name}/{champion_version.version}"
        champion = mlflow.pyfunc.load_model(champion_uri)
        champion_scores = np.asarray(champion.predict(features), dtype=float)
        champion_metrics = classification_metrics(labels, champion_scores)
        comparison = paired_bootstrap_auc_delta(
            labels, challenger_scores, champion_scores, resamples=resamples
        )
        comparison["auc_delta"] = challenger_metrics["auc"] - champion_metrics["auc"]
        tags = dict(champion_version.tags or {})
        result["champion"] = {
            "version": str(champion_version.version),
            "run_id": champion_version.run_id,
            "model_uri": champion_uri,
            **champion_metrics,
            # What it scored on its own hold-out when it was trained (the gate's collapse check).
            "training_auc": _number(tags.get("mlops.holdout_auc")),
            "training_accuracy": _number(tags.get("mlops.holdout_accuracy")),
        }
        result["comparison"] = comparison
        logged |= {f"champion_holdout_{k}": v for k, v in champion_metrics.items()}
        logged |= {k: v for k, v in comparison.items() if k.startswith("auc_delta")}

    client.log_batch(
        trained["run_id"],
        metrics=[
            mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
            for k, v in logged.items()
        ],
    )
    write_json(partition.result("evaluate"), result)
    return result
