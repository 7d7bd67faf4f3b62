"""Where a monitored window's verdict goes: one MLflow run per window, a table in the task log, and
the extra of the drift asset event that starts retraining."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_steps.common.tracking import tracking_uri
from mlops_steps.core.report_links import report_link, report_url
from mlops_steps.core.settings import Settings
from mlops_steps.monitoring.reference import Champion

log = logging.getLogger(__name__)
#: Label counts logged as MLflow metrics (``labels_<name>``) of each monitored window.
LABEL_METRICS = ("files", "rows_read", "late", "duplicates", "unmatched_labels", "join_rate")


def _run_url(experiment_id: str, run_id: str) -> str | None:
    uri = tracking_uri().rstrip("/")
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"


def log_to_mlflow(
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
        "labeled_rows": perf["labeled_rows"],
        **{f"labels_{k}": perf["labels"][k] for k in LABEL_METRICS},
        **(
            {k: perf[k] for m in perf["judged_metrics"] for k in (m, f"{m}_drop")}
            if perf["judged"]
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


def log_table(result: dict[str, Any]) -> None:
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
        f"prediction drift ({prediction.get('column', 'score')}): {prediction['method']} "
        f"{prediction['score']:.4f} (threshold {prediction['threshold']}; {_moved(prediction)}): "
        f"{'DETECTED' if prediction['detected'] else 'not detected'}",
    ]
    perf = result["performance"]
    lines.extend(_label_lines(perf["labels"]))
    if not perf["judged"]:
        lines.append(f"performance: not judged ({perf['reason']})")
    else:
        judged = ", ".join(
            f"{m} {perf[m]:.4f} (trained {perf[f'reference_{m}']:.4f})"
            for m in perf["judged_metrics"]
        )
        lines.append(
            f"performance on {perf['labeled_rows']} labelled rows: {judged}: "
            f"{'DEGRADED' if perf['degraded'] else 'ok'}"
        )
    lines.append(f"report: {result['reports']['data_drift_html']}")
    lines.append(f"report link: {report_link(result['reports']['data_drift_html'])}")
    lines.append(f"verdict: {'DRIFT DETECTED' if result['drift_detected'] else 'no drift'}")
    for line in lines:
        log.info("%s", line)


def _label_lines(labels: dict[str, Any]) -> list[str]:
    """The labels known by the window's end, as a small table: none is dropped unsaid."""
    rows = [
        ("label files", labels["files"]),
        ("rows read", labels["rows_read"]),
        ("kept", labels["kept"]),
        ("empty (no value)", labels["empty"]),
        ("late (known after the cutoff)", labels["late"]),
        ("duplicates (superseded)", labels["duplicates"]),
        ("  of them conflicting", labels["conflicting"]),
        ("label_time from file", labels["label_time_from_file"]),
        ("served rows labelled", labels["matched_rows"]),
        ("labels matching no row", labels["unmatched_labels"]),
    ]
    return [
        f"labels known by {labels['cutoff']}: {labels['location']} (join rate "
        f"{labels['join_rate']:.1%}; by {labels['joined_by'] or 'nothing'})",
        *(f"  {name:<32} {count:>10}" for name, count in rows),
    ]


def _moved(prediction: dict[str, Any]) -> str:
    """How the served output moved: the mean (score, value) or the class mix."""
    if "reference_mix" in prediction:
        return f"class mix {prediction['reference_mix']} -> {prediction['current_mix']}"
    return (
        f"mean {prediction.get('column', 'score')} {prediction['reference_mean']:.3f} -> "
        f"{prediction['current_mean']:.3f}"
    )


def asset_extra(result: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """What the DAG attaches to the drift-detected asset event (small, JSON-safe); the report's
    path stays for scripts on the data volume, ``report_url`` is for a person's browser."""
    reports = result["reports"]
    return {
        "model_name": result["model_name"],
        "champion_version": result["champion_version"],
        "window": {k: result["window"][k] for k in ("start", "end")},
        "reasons": result["reasons"],
        "drifted_columns": result["drifted_columns"],
        "drift_share": round(result["drift_share"], 4),
        "prediction_drift_score": round(result["prediction_drift_score"], 4),
        "performance_degraded": result["performance"]["degraded"],
        "labels": {
            "labelled_rows": result["performance"]["labeled_rows"],
            "join_rate": round(result["performance"]["labels"]["join_rate"], 4),
        },
        "report": reports["data_drift_html"],
        # None without MLOPS_AIRFLOW_URL (the log line says so).
        "report_url": report_url(reports["data_drift_html"], settings),
        "report_dir": reports["dir"],
        "result_url": report_url(reports.get("result_json"), settings),
        "mlflow_run": reports["mlflow_run_url"] or result["mlflow_run_id"],
    }
