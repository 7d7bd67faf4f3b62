"""The MLflow run that records a batch run's lineage: which version scored which table into which
files. One run per model, run key and output directory (a retry or a re-run finds it), in the
experiment ``<model>-batch-scoring``; the manifest is its artifact, the row counts its metrics."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from mlops_steps.core.sections import for_model
from mlops_steps.scoring.model import ScoringModel

EXPERIMENT_TEMPLATE = "{model}-batch-scoring"
RUN_TAG = "mlops.scoring_run"
OUTPUT_TAG = "mlops.output"


def _experiment_id(client: Any, model_name: str) -> str:
    name = for_model(EXPERIMENT_TEMPLATE, model_name)
    experiment = client.get_experiment_by_name(name)
    return str(experiment.experiment_id if experiment else client.create_experiment(name))


def start_lineage(
    client: Any, model: ScoringModel, run_key: str, output: str, tags: dict[str, str]
) -> str:
    """The run of this model, run key and output directory (created the first time), tagged
    with what scores what; returns its id."""
    experiment_id = _experiment_id(client, model.name)
    same_output = output.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_TAG}` = '{run_key}' and tags.`{OUTPUT_TAG}` = '{same_output}'",
        max_results=1,
    )
    airflow = {
        tag: os.environ[env]
        for tag, env in (
            ("mlops.airflow_dag_id", "MLOPS_AIRFLOW_DAG_ID"),
            ("mlops.airflow_run_id", "MLOPS_AIRFLOW_RUN_ID"),
        )
        if os.environ.get(env)
    }
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")  # an attempt that failed is tried again
    else:
        run_id = client.create_run(experiment_id, run_name=f"score-{run_key}").info.run_id
    for key, value in {
        RUN_TAG: run_key,
        OUTPUT_TAG: output,
        "mlops.model_name": model.name,
        "mlops.model_version": model.version,
        "mlops.model_ref": model.ref,
        "mlops.model_run_id": model.run_id,
        **tags,
        **airflow,
    }.items():
        client.set_tag(run_id, key, value)
    return str(run_id)


def finish_lineage(client: Any, run_id: str, manifest: dict[str, Any], payload: bytes) -> None:
    """Row counts as metrics, the manifest as the artifact, and the run FINISHED (idempotent:
    a re-run of a complete run finishes a lineage run an earlier attempt left open).
    ``payload`` is the manifest's bytes as published (local or on S3)."""
    from mlflow.entities import Metric

    if client.get_run(run_id).info.status == "FINISHED":
        return
    timestamp = int(manifest["created_at_ms"])
    metrics = {
        "rows": manifest["rows"],
        "files": len(manifest["files"]),
        "chunks": manifest["chunks"],
        "seconds": manifest["seconds"],
        "rows_per_s": manifest["rows"] / max(manifest["seconds"], 1e-9),
    }
    client.log_batch(
        run_id, metrics=[Metric(k, float(v), timestamp, 0) for k, v in metrics.items()]
    )
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "manifest.json"
        copy.write_bytes(payload)
        client.log_artifact(run_id, str(copy))
    client.set_terminated(run_id, "FINISHED")


def fail_lineage(client: Any, run_id: str) -> None:
    """Mark the run FAILED (the next attempt reopens it by its run key)."""
    client.set_terminated(run_id, "FAILED")
