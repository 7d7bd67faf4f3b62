"""monitor: judge one window of served predictions against the champion's training data.

Reads the service's prediction log for the window, keeps the rows the current ``champion``
version answered, and compares them with that version's own training partition (found through
its ``mlops.partition`` tag and checked against ``mlops.data_sha256``):

* data drift: Evidently's per-column tests on every row, dataset drift when the share of drifted
  features reaches ``drift_share`` (see :mod:`mlops_steps.common.drift`);
* prediction drift: served scores against the champion's scores on its own hold-out;
* performance, where delayed labels exist (``$MLOPS_DATA_ROOT/labels/*.csv|parquet``): AUC and
  accuracy of the joined rows against the version's training-time ``mlops.holdout_*`` tags.

Reports go to ``$MLOPS_DATA_ROOT/monitoring/<model>/window=<start>_<end>/`` and to one MLflow run
per window in the ``<model>-monitoring`` experiment, tagged with the champion version: the
champion's training run stays the immutable record of how it was trained (its tags drive the
gate, the registry and idempotent re-runs), while the monitoring runs line up as a time series.

No champion yet: nothing to monitor (exit 3, the task is skipped). Missing, empty, null or
mistyped data: a named error (exit 2); drift is never reported as absent for data not judged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.drift import (
    check_policy,
    data_drift,
    prediction_drift,
    write_reports,
)
from mlops_steps.common.storage import write_json
from mlops_steps.common.tracking import connect
from mlops_steps.core.policies import DriftPolicy, PerformancePolicy
from mlops_steps.core.settings import Settings
from mlops_steps.monitoring.labels import performance
from mlops_steps.monitoring.predictions import check_features, read_window
from mlops_steps.monitoring.reference import (
    Champion,
    champion_features,
    load_champion,
    reference_data,
    reference_scores,
)
from mlops_steps.monitoring.reporting import asset_extra, log_table, log_to_mlflow
from mlops_steps.monitoring.window import EmptyWindow, FeatureKind, SchemaMismatch, Window


@dataclass(frozen=True)
class MonitorRequest:
    """Everything one monitoring run needs, as the CLI flags give it."""

    window: Window
    prediction_log: str
    labels_dir: Path
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    performance: PerformancePolicy = field(default_factory=PerformancePolicy)
    min_rows: int = 200
    max_null_share: float = 0.0


def _champion_rows(
    request: MonitorRequest, champion: Champion, kinds: dict[str, FeatureKind]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    served = read_window(request.prediction_log, request.window, kinds)
    meta = served.meta
    by_version = {
        f"{variant}/v{version}": int(n)
        for (variant, version), n in meta.groupby(
            [meta["variant"].fillna("?"), meta["model_version"]]
        )
        .size()
        .items()
    }
    mine = (meta["model_version"] == champion.version).to_numpy()
    count = int(mine.sum())
    rows: dict[str, Any] = {"window": len(meta), "champion": count, "by_version": by_version}
    if count < request.min_rows:
        raise EmptyWindow(
            f"{count} predictions by champion v{champion.version} in the window "
            f"(< --min-rows {request.min_rows}); served: {by_version or 'nothing'}",
            subject=f"{request.prediction_log} {request.window.key}",
            fix="widen the window (window_hours) or wait for traffic; too few rows are never "
            "reported as 'no drift'",
        )
    source = f"{request.prediction_log} (window {request.window.key})"
    bad_scores = int((~np.isfinite(meta["score"].to_numpy(dtype="float64")[mine])).sum())
    if bad_scores:
        raise SchemaMismatch(
            f"'score' is missing or not a number in {bad_scores} of {count} champion rows",
            subject=source,
            fix="the log must come from the model service (it logs every score it returns)",
        )
    current = check_features(
        served.features[mine].reset_index(drop=True),
        kinds,
        source=source,
        max_null_share=request.max_null_share,
        seen=served.seen_features,
    )
    return meta[mine].reset_index(drop=True), current, rows


def run_monitor(settings: Settings, request: MonitorRequest) -> dict[str, Any]:
    started = time.perf_counter()
    client = connect()
    champion = load_champion(client, settings.model_name)  # before anything heavy: skip fast
    kinds = champion_features(client, champion)
    check_policy(request.drift, kinds)
    reference_frame, partition, data_sha = reference_data(settings, champion)
    reference = check_features(
        reference_frame, kinds, source=str(partition.data), max_null_share=0.0
    )
    meta, current, rows = _champion_rows(request, champion, kinds)
    rows["reference"] = len(reference)

    data = data_drift(reference, current, kinds, request.drift)
    ref_scores = reference_scores(settings, champion, reference_frame, kinds, data_sha)
    prediction = prediction_drift(ref_scores, meta["score"].to_numpy(), request.drift)
    perf, perf_reason = performance(meta, champion, request.labels_dir, request.performance)

    reasons = []
    if data["detected"]:
        reasons.append(
            f"data drift in {len(data['drifted_columns'])} of {len(data['columns'])} features "
            f"({', '.join(data['drifted_columns'])})"
        )
    if prediction["detected"]:
        reasons.append(
            f"prediction drift: {prediction['method_name']} {prediction['score']:.4g} "
            f"(threshold {prediction['threshold']})"
        )
    if perf is not None and perf["degraded"]:
        reasons.append(
            f"performance: AUC {perf['auc']:.4f} vs {perf['reference_auc']:.4f}, accuracy "
            f"{perf['accuracy']:.4f} vs {perf['reference_accuracy']:.4f}"
        )

    directory = settings.monitoring_root / f"window={request.window.key}"
    reports = write_reports(
        directory,
        reference=reference,
        current=current,
        reference_scores=ref_scores,
        current_scores=meta["score"].to_numpy(),
        features=kinds,
        policy=request.drift,
    )
    result: dict[str, Any] = {
        "model_name": champion.name,
        "champion_version": champion.version,
        "champion_run_id": champion.run_id,
        "reference_partition": partition.key,
        "reference_data_sha256": data_sha,
        "window": request.window.to_dict(),
        "rows": rows,
        "drift_detected": bool(reasons),
        "reasons": reasons,
        "drifted_columns": data["drifted_columns"],
        "drift_share": data["share"],
        "prediction_drift_score": prediction["score"],
        "data_drift": data,
        "prediction_drift": prediction,
        "performance": perf,
        "performance_reason": perf_reason,
        "policy": {
            "drift": {k: v for k, v in asdict(request.drift).items() if k != "seed"},
            "performance": asdict(request.performance),
            "min_rows": request.min_rows,
            "max_null_share": request.max_null_share,
        },
        "reports": {
            **reports,
            "dir": str(directory),
            "result_json": str(directory / "monitoring.json"),
            "mlflow_run_url": None,
        },
        "mlflow_run_id": None,
    }
    write_json(directory / "monitoring.json", result)  # part of the artifacts logged below
    run_id, url = log_to_mlflow(client, settings, champion, result, directory)
    result["mlflow_run_id"], result["reports"]["mlflow_run_url"] = run_id, url
    result["asset_extra"] = asset_extra(result)
    result["seconds"] = round(time.perf_counter() - started, 2)
    write_json(directory / "monitoring.json", result)
    log_table(result)
    return result
