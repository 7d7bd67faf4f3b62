"""monitor: judge one window of served predictions against the champion's training data.

Reads the service's prediction log for the window, keeps the rows the current ``champion``
version answered, and compares them with that version's own training partition (found through
its ``mlops.partition`` tag and checked against ``mlops.data_sha256``):

* data drift: Evidently's per-column tests on every row, dataset drift when the share of drifted
  features reaches ``drift_share`` (see :mod:`mlops_steps.common.drift`);
* prediction drift: the served output against the champion's on its own hold-out, by the model's
  task: the score (binary), the predicted class mix (multiclass) or the value (regression);
* performance, where delayed labels have landed by the window's end (the model's label landing
  place, ``settings.labels_location``; common/labels.py): the task's primary metric (and a
  classifier's accuracy) of the joined rows against the version's training-time
  ``mlops.holdout_*`` tags (monitoring/performance.py). The labels' counts (files, rows read,
  late, duplicates, unmatched, join rate) are reported whether or not performance is judged.

The model's contract (``load_contract(settings.model_name)``) names the task, the label and the
classes; the features and their kinds come from the champion's own feature spec.

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
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.drift import PREDICTION_COLUMN, check_policy, data_drift, prediction_drift
from mlops_steps.common.drift_report import write_reports
from mlops_steps.common.labels import read_labels
from mlops_steps.common.predictions import check_features, read_window
from mlops_steps.common.storage import write_json
from mlops_steps.common.tracking import connect
from mlops_steps.common.window import EmptyWindow, FeatureKind, SchemaMismatch, Window
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.policies import DriftPolicy, PerformancePolicy
from mlops_steps.core.settings import Settings
from mlops_steps.monitoring.performance import performance
from mlops_steps.monitoring.reference import (
    Champion,
    ReferenceDataError,
    champion_spec,
    features_of,
    load_champion,
    reference_data,
    reference_predictions,
)
from mlops_steps.monitoring.reporting import asset_extra, log_table, log_to_mlflow


@dataclass(frozen=True)
class MonitorRequest:
    """Everything one monitoring run needs, as the CLI flags give it."""

    window: Window
    prediction_log: str
    labels_location: str
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    performance: PerformancePolicy = field(default_factory=PerformancePolicy)
    min_rows: int = 200
    max_null_share: float = 0.0


def _served_predictions(meta: pd.DataFrame, task: str, source: str) -> pd.Series:
    """The champion rows' prediction of the task's kind; a row without one fails closed."""
    if task == "multiclass":
        classes = meta["class"]
        missing = int(classes.isna().sum())
        if missing:
            raise SchemaMismatch(
                f"'class' is missing in {missing} of {len(meta)} champion rows",
                subject=source,
                fix="a multiclass model's log lines carry the predicted class: the log must "
                "come from a model service serving this model",
            )
        return classes.astype(str).reset_index(drop=True)
    return meta["score"].reset_index(drop=True)


def _check_task(contract: ModelContract, spec: dict[str, Any], champion: Champion) -> None:
    """The champion was trained for this contract's task (a spec without one is binary churn)."""
    trained = spec.get("task", "binary")
    if trained != contract.task:
        raise ReferenceDataError(
            f"was trained as a {trained} model, but model {contract.name}'s contract says "
            f"{contract.task}",
            subject=f"{champion.name} v{champion.version}",
            fix="monitor with the contract the champion was trained with, or promote a "
            "version trained under the current contract",
        )


#: The top-level log fields monitoring reads: the served prediction (score or class), and the
#: ids only when there are labels to join them to (10M ids are ~1.5 GB as Python strings).
_PREDICTION_FIELDS = ("score", "class")
_ID_FIELDS = ("request_id", "row", "entity_id")


def _champion_rows(
    request: MonitorRequest, champion: Champion, kinds: dict[str, FeatureKind], with_ids: bool
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    fields = _PREDICTION_FIELDS + (_ID_FIELDS if with_ids else ())
    served = read_window(request.prediction_log, request.window, kinds, meta=fields,
                         only_version=champion.version, categorical=True)  # fmt: skip
    meta = served.meta
    by_version = {
        f"{variant}/v{version}": n for (variant, version), n in sorted(served.by_version.items())
    }
    count = len(meta)
    rows: dict[str, Any] = {
        "window": sum(by_version.values()),
        "champion": count,
        "by_version": by_version,
    }
    if count < request.min_rows:
        raise EmptyWindow(
            f"{count} predictions by champion v{champion.version} in the window "
            f"(< --min-rows {request.min_rows}); served: {by_version or 'nothing'}",
            subject=f"{request.prediction_log} {request.window.key}",
            fix="widen the window (window_hours) or wait for traffic; too few rows are never "
            "reported as 'no drift'",
        )
    source = f"{request.prediction_log} (window {request.window.key})"
    bad_scores = int((~np.isfinite(meta["score"].to_numpy(dtype="float64"))).sum())
    if bad_scores:
        raise SchemaMismatch(
            f"'score' is missing or not a number in {bad_scores} of {count} champion rows",
            subject=source,
            fix="the log must come from the model service (it logs every score it returns)",
        )
    current = check_features(
        served.features,
        kinds,
        source=source,
        max_null_share=request.max_null_share,
        seen=served.seen_features,
    )
    return meta, current, rows


def run_monitor(settings: Settings, request: MonitorRequest) -> dict[str, Any]:
    from mlops_steps.contract.loader import load_contract

    started = time.perf_counter()
    contract = load_contract(settings.model_name)
    task = contract.task
    client = connect()
    champion = load_champion(client, settings.model_name)  # before anything heavy: skip fast
    spec = champion_spec(client, champion)
    _check_task(contract, spec, champion)
    kinds = features_of(spec)
    check_policy(request.drift, kinds, task)
    reference_frame, partition, data_sha = reference_data(settings, champion)
    reference = check_features(
        reference_frame, kinds, source=str(partition.data), max_null_share=0.0
    )
    labels = read_labels(request.labels_location, contract, cutoff=request.window.end)
    meta, current, rows = _champion_rows(request, champion, kinds, with_ids=bool(labels.files))
    rows["reference"] = len(reference)

    data = data_drift(reference, current, kinds, request.drift)
    served = _served_predictions(meta, task, f"{request.prediction_log} {request.window.key}")
    ref_predictions = reference_predictions(
        settings, champion, reference_frame, kinds, data_sha, contract=contract
    )
    prediction = prediction_drift(ref_predictions, served, request.drift, task)
    perf = performance(
        meta,
        champion,
        request.labels_location,
        request.performance,
        contract,
        cutoff=request.window.end,
        labels=labels,
    )

    reasons = []
    if data["detected"]:
        reasons.append(
            f"data drift in {len(data['drifted_columns'])} of {len(data['columns'])} features "
            f"({', '.join(data['drifted_columns'])})"
        )
    if prediction["detected"]:
        reasons.append(
            f"prediction drift ({PREDICTION_COLUMN[task]}): {prediction['method_name']} "
            f"{prediction['score']:.4g} (threshold {prediction['threshold']})"
        )
    if perf["judged"] and perf["degraded"]:
        reasons.append(
            "performance: "
            + ", ".join(
                f"{m} {perf[m]:.4f} vs {perf[f'reference_{m}']:.4f}" for m in perf["judged_metrics"]
            )
        )

    directory = settings.monitoring_root / f"window={request.window.key}"
    reports = write_reports(
        directory,
        reference=reference,
        current=current,
        reference_scores=ref_predictions.to_numpy(),
        current_scores=served.to_numpy(),
        features=kinds,
        policy=request.drift,
        task=task,
    )
    result: dict[str, Any] = {
        "model_name": champion.name,
        "task": task,
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
        "performance_reason": perf["reason"],
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
