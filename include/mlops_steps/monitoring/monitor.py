"""monitor: judge one window of served predictions against the champion's training data.

Reads the service's prediction log for the window, keeps the rows the current ``champion``
version answered, and compares them with that version's own training partition (found through
its ``mlops.partition`` tag and checked against ``mlops.data_sha256``):

* data drift: Evidently's per-column tests on every row, dataset drift when the share of drifted
  features reaches ``drift_share`` (see :mod:`mlops_steps.drift`);
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

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.storage import Partition, load_partition_frame, write_json
from mlops_steps.common.tracking import CHAMPION, connect, tracking_uri, version_by_alias
from mlops_steps.contract.schema import LABEL_COLUMN
from mlops_steps.core.errors import NothingToDo, StepError
from mlops_steps.core.settings import Settings
from mlops_steps.monitoring.drift import (
    DriftPolicy,
    check_policy,
    data_drift,
    prediction_drift,
    write_reports,
)
from mlops_steps.monitoring.predictions import (
    EmptyWindow,
    FeatureKind,
    SchemaMismatch,
    Window,
    check_features,
    read_window,
)

log = logging.getLogger(__name__)

LABEL_KEYS = (("request_id", "row"), ("request_id",), ("entity_id",))  # most specific first
_LABEL_SUFFIXES = (".csv", ".csv.gz", ".parquet")


class ReferenceDataError(StepError):
    """The champion's training data cannot be found or is not what it was trained on."""


class LabelsError(StepError):
    """A labels file breaks its contract (key columns, 0/1 label)."""


@dataclass(frozen=True)
class PerformancePolicy:
    """When the champion counts as degraded on labelled traffic."""

    max_auc_drop: float = 0.05
    max_accuracy_drop: float = 0.05
    min_labeled_rows: int = 200


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


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]


def load_champion(client: Any, model_name: str) -> Champion:
    version = version_by_alias(client, model_name, CHAMPION)
    if version is None:
        raise NothingToDo(
            "no version has the alias 'champion' yet, so no model is serving",
            subject=f"{model_name}@{CHAMPION}",
            fix="promote a version with the deployment pipeline; monitoring starts then",
        )
    return Champion(model_name, str(version.version), version.run_id, dict(version.tags or {}))


def champion_features(client: Any, champion: Champion) -> dict[str, FeatureKind]:
    """The champion's own feature spec (logged with the model; serving validates with it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(champion.run_id, "feature_spec.json", tmp)
            spec = json.loads(Path(path).read_text())
        except Exception as exc:
            raise ReferenceDataError(
                f"its run {champion.run_id} has no readable feature_spec.json ({exc})",
                subject=f"{champion.name} v{champion.version}",
                fix="champions are trained by the 'train' step, which logs the spec",
            ) from None
    return {f["name"]: FeatureKind(f["name"], f["kind"]) for f in spec["features"]}


def reference_data(settings: Settings, champion: Champion) -> tuple[pd.DataFrame, Partition, str]:
    """The champion's training partition, after both checksum checks."""
    subject = f"{champion.name} v{champion.version}"
    partition_key = champion.tags.get("mlops.partition")
    expected_sha = champion.tags.get("mlops.data_sha256")
    if not partition_key or not expected_sha:
        raise ReferenceDataError(
            "lacks the mlops.partition / mlops.data_sha256 tags naming its training data",
            subject=subject,
            fix="register versions with the 'register' step (it sets both tags)",
        )
    partition = Partition.of(settings.dataset_root, partition_key)
    if not partition.manifest.is_file():
        raise ReferenceDataError(
            f"its training partition {partition_key} is not at {partition.root}",
            subject=subject,
            fix="restore the partition (or point MLOPS_DATA_ROOT at the shared data volume)",
        )
    frame, manifest = load_partition_frame(partition)  # checks the file against its manifest
    if manifest.get("data_sha256") != expected_sha:
        raise ReferenceDataError(
            f"partition {partition_key} holds data {manifest.get('data_sha256')}, but the "
            f"version was trained on {expected_sha}",
            subject=str(partition.data),
            fix="the partition was re-ingested with other data; restore the trained data",
        )
    return frame, partition, expected_sha


def reference_scores(
    settings: Settings,
    champion: Champion,
    frame: pd.DataFrame,
    kinds: dict[str, FeatureKind],
    data_sha: str,
) -> np.ndarray:
    """The champion's scores on its own hold-out, computed once per version and data hash."""
    import mlflow

    from mlops_steps.common.metrics import split_frame
    from mlops_steps.common.storage import write_parquet

    cache = settings.monitoring_root / "reference" / f"v{champion.version}-{data_sha[:16]}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache)["score"].to_numpy()
    holdout = split_frame(frame).holdout
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    scores = np.asarray(model.predict(holdout.loc[:, list(kinds)]), dtype="float64")
    write_parquet(cache, pd.DataFrame({"score": scores}))
    return scores


def _label_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(_LABEL_SUFFIXES))


def _read_labels(path: Path) -> tuple[tuple[str, ...], pd.DataFrame]:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    keys = next((k for k in LABEL_KEYS if set(k) <= set(frame.columns)), None)
    if keys is None or LABEL_COLUMN not in frame.columns:
        raise LabelsError(
            f"has columns {sorted(frame.columns)}; needs {LABEL_COLUMN!r} and 'entity_id' or "
            "'request_id' (optionally with 'row')",
            subject=str(path),
            fix="write labels as entity_id,churn or request_id[,row],churn",
        )
    labels = pd.to_numeric(frame[LABEL_COLUMN], errors="coerce")
    bad = frame[LABEL_COLUMN].notna() & ~labels.isin([0, 1])
    if bad.any():
        raise LabelsError(
            f"{int(bad.sum())} values of {LABEL_COLUMN!r} are not 0/1 "
            f"(first: {frame.loc[bad, LABEL_COLUMN].iloc[0]!r})",
            subject=str(path),
            fix="labels are 0 (stayed) or 1 (churned); leave unknown ones empty",
        )
    out = pd.DataFrame({key: frame[key].astype(str) for key in keys})
    if "row" in keys:
        out["row"] = pd.to_numeric(frame["row"], errors="coerce").astype("Int64").astype(str)
    out[LABEL_COLUMN] = labels
    return keys, out.dropna(subset=[LABEL_COLUMN]).drop_duplicates(subset=list(keys), keep="last")


def join_labels(meta: pd.DataFrame, directory: Path) -> tuple[pd.Series, dict[str, Any]]:
    """A label per served row where one is known: by request id and row, by request id (for
    single-row requests), then by entity id; among files of one kind, the newest name wins."""
    files = _label_files(directory)
    labels = pd.Series(np.nan, index=meta.index)
    info: dict[str, Any] = {"files": len(files), "joined_by": {}}
    if not files:
        return labels, info
    keyed = sorted(
        (_read_labels(path) for path in reversed(files)), key=lambda kt: LABEL_KEYS.index(kt[0])
    )
    served = pd.DataFrame(
        {
            "request_id": meta["request_id"].astype(str),
            "row": pd.to_numeric(meta["row"], errors="coerce").astype("Int64").astype(str),
            "entity_id": meta["entity_id"].astype(str),
        },
        index=meta.index,
    )
    single = served["request_id"].map(served["request_id"].value_counts()) == 1
    for keys, table in keyed:
        candidates = served if keys != ("request_id",) else served[single]
        joined = candidates.reset_index().merge(table, on=list(keys), how="inner")
        joined = joined.set_index("index")[LABEL_COLUMN]
        fill = joined[labels.loc[joined.index].isna().to_numpy()]
        labels.loc[fill.index] = fill.to_numpy()
        name = "+".join(keys)
        info["joined_by"][name] = info["joined_by"].get(name, 0) + len(fill)
    return labels, info


def performance(
    meta: pd.DataFrame, champion: Champion, directory: Path, policy: PerformancePolicy
) -> tuple[dict[str, Any] | None, str | None]:
    """AUC/accuracy on the labelled champion rows against its training-time hold-out metrics,
    or ``None`` and the reason it cannot be judged."""
    from mlops_steps.common.metrics import classification_metrics

    labels, info = join_labels(meta, directory)
    known = labels.notna().to_numpy()
    count = int(known.sum())
    if not info["files"]:
        return None, f"no label files in {directory}"
    if count < policy.min_labeled_rows:
        return None, (
            f"{count} labelled rows in the window (< --min-labeled-rows "
            f"{policy.min_labeled_rows}); {info['files']} label files read"
        )
    y = labels.to_numpy()[known].astype(int)
    if len(np.unique(y)) < 2:
        return None, f"the {count} labelled rows hold one class only"
    try:
        reference_auc = float(champion.tags["mlops.holdout_auc"])
        reference_accuracy = float(champion.tags["mlops.holdout_accuracy"])
    except (KeyError, ValueError):
        return None, (
            f"{champion.name} v{champion.version} has no mlops.holdout_auc / "
            "mlops.holdout_accuracy tags to compare with"
        )
    measured = classification_metrics(y, meta["score"].to_numpy()[known])
    auc_drop = reference_auc - measured["auc"]
    accuracy_drop = reference_accuracy - measured["accuracy"]
    return {
        "labeled_rows": count,
        "joined_by": info["joined_by"],
        **measured,
        "reference_auc": reference_auc,
        "reference_accuracy": reference_accuracy,
        "auc_drop": auc_drop,
        "accuracy_drop": accuracy_drop,
        "max_auc_drop": policy.max_auc_drop,
        "max_accuracy_drop": policy.max_accuracy_drop,
        "degraded": auc_drop > policy.max_auc_drop or accuracy_drop > policy.max_accuracy_drop,
    }, None


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


def _run_url(experiment_id: str, run_id: str) -> str | None:
    uri = tracking_uri().rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"


def _log_to_mlflow(
    client: Any,
    settings: Settings,
    champion: Champion,
    result: dict[str, Any],
    directory: Path,
) -> tuple[str, str | None]:
    """One run per window and champion version (a retry reuses it) with metrics stamped at the
    window's end, the verdict as tags, and the report files as artifacts."""
    import os

    from mlflow.entities import Metric, RunTag

    name = settings.monitoring_experiment
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id if experiment is not None else client.create_experiment(name)
    )
    window = result["window"]
    tags = {
        "mlops.model_name": champion.name,
        "mlops.champion_version": champion.version,
        "mlops.champion_run_id": champion.run_id,
        "mlops.window": window["key"],
        "mlops.window_start": window["start"],
        "mlops.window_end": window["end"],
        **{
            tag: os.environ[env]
            for tag, env in (
                ("mlops.airflow_dag_id", "MLOPS_AIRFLOW_DAG_ID"),
                ("mlops.airflow_run_id", "MLOPS_AIRFLOW_RUN_ID"),
            )
            if os.environ.get(env)
        },
    }
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlops.window` = '{window['key']}' and "
        f"tags.`mlops.champion_version` = '{champion.version}'",
        max_results=1,
    )
    run_id = (
        existing[0].info.run_id
        if existing
        else client.create_run(experiment_id, run_name=f"monitor-{window['key']}").info.run_id
    )
    data, prediction, perf = result["data_drift"], result["prediction_drift"], result["performance"]
    metrics = {
        "rows_window": result["rows"]["window"],
        "rows_champion": result["rows"]["champion"],
        "drift_share": data["share"],
        "drifted_columns": len(data["drifted_columns"]),
        "prediction_drift_score": prediction["score"],
        "drift_detected": float(result["drift_detected"]),
        **{f"drift_score__{c['column']}": c["score"] for c in data["columns"]},
        **(
            {k: perf[k] for k in ("auc", "accuracy", "auc_drop", "accuracy_drop", "labeled_rows")}
            if perf
            else {}
        ),
    }
    stamp = int(pd.Timestamp(window["end"]).timestamp() * 1000)
    tags |= {
        "mlops.drift_detected": str(result["drift_detected"]).lower(),
        "mlops.drift_reasons": "; ".join(result["reasons"])[:4000] or "none",
        "mlops.drifted_columns": ",".join(data["drifted_columns"])[:4000] or "none",
    }
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.log_artifacts(run_id, str(directory), "monitoring")
    client.set_terminated(run_id)
    return run_id, _run_url(experiment_id, run_id)


def _log_table(result: dict[str, Any]) -> None:
    data, prediction = result["data_drift"], result["prediction_drift"]
    lines = [
        f"data drift: {len(data['drifted_columns'])} of {len(data['columns'])} columns drifted "
        f"(share {data['share']:.3f}; dataset drift at >= {data['drift_share_threshold']}): "
        f"{'DETECTED' if data['detected'] else 'not detected'}",
        f"{'column':<20} {'method':<14} {'score':>10} {'threshold':>10}  drifted",
        *(
            f"{c['column']:<20} {c['method']:<14} {c['score']:>10.4f} {c['threshold']:>10.4f}  "
            f"{'YES' if c['drifted'] else 'no'}"
            for c in data["columns"]
        ),
        f"prediction drift: {prediction['method']} {prediction['score']:.4f} (threshold "
        f"{prediction['threshold']}; mean score {prediction['reference_mean']:.3f} -> "
        f"{prediction['current_mean']:.3f}): "
        f"{'DETECTED' if prediction['detected'] else 'not detected'}",
    ]
    perf = result["performance"]
    if perf is None:
        lines.append(f"performance: not judged ({result['performance_reason']})")
    else:
        lines.append(
            f"performance on {perf['labeled_rows']} labelled rows: AUC {perf['auc']:.4f} "
            f"(trained {perf['reference_auc']:.4f}), accuracy {perf['accuracy']:.4f} (trained "
            f"{perf['reference_accuracy']:.4f}): {'DEGRADED' if perf['degraded'] else 'ok'}"
        )
    lines.append(f"report: {result['reports']['data_drift_html']}")
    lines.append(f"verdict: {'DRIFT DETECTED' if result['drift_detected'] else 'no drift'}")
    for line in lines:
        log.info("%s", line)


def asset_extra(result: dict[str, Any]) -> dict[str, Any]:
    """What the DAG attaches to the drift-detected asset event (small, JSON-safe)."""
    return {
        "model_name": result["model_name"],
        "champion_version": result["champion_version"],
        "window": {k: result["window"][k] for k in ("start", "end")},
        "reasons": result["reasons"],
        "drifted_columns": result["drifted_columns"],
        "drift_share": round(result["drift_share"], 4),
        "prediction_drift_score": round(result["prediction_drift_score"], 4),
        "performance_degraded": (result["performance"] or {}).get("degraded"),
        "report": result["reports"]["data_drift_html"],
        "report_dir": result["reports"]["dir"],
        "mlflow_run": result["reports"]["mlflow_run_url"] or result["mlflow_run_id"],
    }


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
    run_id, url = _log_to_mlflow(client, settings, champion, result, directory)
    result["mlflow_run_id"], result["reports"]["mlflow_run_url"] = run_id, url
    result["asset_extra"] = asset_extra(result)
    result["seconds"] = round(time.perf_counter() - started, 2)
    write_json(directory / "monitoring.json", result)
    _log_table(result)
    return result
