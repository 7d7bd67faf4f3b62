"""evaluate: score the challenger and the current champion on the same hold-out rows, with the
metrics of the model's task (binary: auc, log_loss, accuracy, f1; multiclass: log_loss, macro_f1,
accuracy and per class precision/recall/F1; regression: rmse, mae, r2).

A partition built from served traffic (its manifest has ``served``) is judged on two hold-outs:
the recent labelled traffic (where the drift is: its own hold-out, minus any row of the
reference partition) and the reference hold-out (the hold-out of the champion's training
partition the manifest names: what the new model must not forget). The result keeps
``challenger``/``champion``/``comparison`` for the recent hold-out and adds ``holdouts``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.columnar import ARROW_STRING, PartitionFile, plain_values
from mlops_steps.common.metrics import (
    encode_labels,
    id_column_of,
    paired_bootstrap_delta,
    per_class_metrics,
    split_masks,
    task_metrics,
)
from mlops_steps.common.storage import Partition, read_json, write_json
from mlops_steps.common.tracking import CHAMPION, connect, version_by_alias
from mlops_steps.contract.loader import load_contract
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError
from mlops_steps.core.settings import Settings

LATENCY_WARMUP, LATENCY_CALLS = 20, 200
RECENT, REFERENCE = "recent", "reference"


class ReferenceHoldoutUnavailable(StepError):
    """A served partition's reference hold-out (the champion's training partition its manifest
    names) is missing or is not the data the partition was built against."""


class HoldoutUnusable(StepError):
    """A hold-out has no rows, or labels the task's metrics cannot be computed on."""


@dataclass(frozen=True)
class Holdout:
    """One hold-out's rows as the models see them."""

    name: str
    features: pd.DataFrame
    labels: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Champion:
    """The model with the alias ``champion``, loaded once for every hold-out."""

    model: Any
    info: dict[str, Any]  # version, run_id, model_uri, training_<metric> (its tags)


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


def _holdout(name: str, rows: pd.DataFrame, contract: ModelContract, where: str) -> Holdout:
    if rows.empty:
        raise HoldoutUnusable(
            f"the {name} hold-out has no rows",
            subject=where,
            fix="ingest more rows (the hold-out is 15 % of the partition's ids)",
        )
    return Holdout(
        name,
        # As a request holds them (MLflow's schema check refuses ``category`` columns).
        plain_values(rows.loc[:, list(contract.feature_names)]),
        encode_labels(rows[contract.label], contract),
    )


def _holdout_rows(data: PartitionFile, contract: ModelContract) -> pd.DataFrame:
    """The hold-out rows (id, features, label) of a partition, read without the others."""
    id_column = id_column_of(contract)
    holdout = split_masks(data.split_buckets(id_column))["holdout"]
    columns = list(dict.fromkeys([id_column, *contract.feature_names, contract.label]))
    return data.read(columns, holdout)


def _id_text(ids: pd.Series) -> pd.Series:
    """Ids as Arrow strings (a number read from one file matches its text in another)."""
    if isinstance(ids.dtype, pd.StringDtype):
        return ids
    return ids.astype(str).astype(ARROW_STRING)


def _metrics(contract: ModelContract, holdout: Holdout, outputs: np.ndarray) -> dict[str, float]:
    try:
        return task_metrics(contract.task, holdout.labels, outputs)
    except ValueError as exc:
        raise HoldoutUnusable(
            f"the {holdout.name} hold-out ({holdout.rows} rows) cannot be scored: {exc}",
            subject=f"{holdout.name} hold-out",
            fix="ingest more labelled rows",
        ) from None


def _load_champion(client: Any, settings: Settings, contract: ModelContract) -> Champion | None:
    import mlflow

    version = version_by_alias(client, settings.model_name, CHAMPION)
    if version is None:
        return None
    uri = f"models:/{settings.model_name}/{version.version}"
    tags = dict(version.tags or {})
    info = {
        "version": str(version.version),
        "run_id": version.run_id,
        "model_uri": uri,
        # What it scored on its own hold-out when it was trained (the gate's collapse check).
        **{f"training_{m}": _number(tags.get(f"mlops.holdout_{m}")) for m in contract.metrics},
    }
    return Champion(mlflow.pyfunc.load_model(uri), info)


def _score(
    contract: ModelContract,
    holdout: Holdout,
    challenger: np.ndarray,
    champion: Champion | None,
    resamples: int,
) -> dict[str, Any]:
    """Both models' metrics on one hold-out and the paired bootstrap of the primary metric's
    delta (challenger - champion; for a loss, negative is better)."""
    challenger_metrics = _metrics(contract, holdout, challenger)
    scored: dict[str, Any] = {
        "rows": holdout.rows,
        "challenger": challenger_metrics,
        "champion": None,
        "comparison": None,
    }
    if champion is None:
        return scored
    outputs = _outputs(champion.model, holdout.features)
    champion_metrics = _metrics(contract, holdout, outputs)
    metric = contract.primary_metric
    scored["champion"] = {**champion.info, **champion_metrics}
    scored["comparison"] = {
        "metric": metric,
        "greater_is_better": contract.greater_is_better,
        **paired_bootstrap_delta(
            metric, contract.task, holdout.labels, challenger, outputs, resamples=resamples
        ),
        f"{metric}_delta": challenger_metrics[metric] - champion_metrics[metric],
    }
    return scored


def _reference_data(
    settings: Settings, manifest: dict[str, Any], where: str
) -> tuple[PartitionFile, dict[str, Any]]:
    """The reference partition and its record, checked against what the served partition was
    built from (its data_sha256); refused, named, when it cannot be."""
    recorded = (manifest.get("served") or {}).get("reference") or {}
    key, expected = recorded.get("partition"), recorded.get("data_sha256")
    if not key or not expected:
        raise ReferenceHoldoutUnavailable(
            "served.reference names no partition and data_sha256, so the reference hold-out "
            "(what the new model must not forget) cannot be scored",
            subject=where,
            fix="re-run 'ingest' for this partition (a served partition records its reference)",
        )
    try:
        # Checks the file's bytes against its manifest, whose data_sha256 is then the content's.
        data = PartitionFile.open(Partition.of(settings.dataset_root, str(key)))
    except StepError as exc:
        raise ReferenceHoldoutUnavailable(
            f"the reference partition {key!r} cannot be read: {exc.render()}",
            subject=where,
            fix=f"restore partition {key} under {settings.dataset_root} (the champion's "
            "training data), or re-run 'ingest' for this partition",
        ) from None
    actual = str(data.manifest.get("data_sha256"))
    if actual != expected:
        raise ReferenceHoldoutUnavailable(
            f"the reference partition {key!r} holds data {actual[:12]}, not the "
            f"{str(expected)[:12]} this partition was built against",
            subject=str(data.partition.data),
            fix="re-run 'ingest' for this partition against the current reference data",
        )
    return data, recorded


def _served_holdouts(
    settings: Settings, contract: ModelContract, data: PartitionFile, where: str
) -> tuple[Holdout, Holdout, dict[str, Any]]:
    """The recent hold-out (this partition's, without any row of the reference partition) and
    the reference hold-out, with what identifies the latter. The split hashes the id, so an id in
    the reference hold-out is in this partition's hold-out too: neither model trained on it."""
    id_column = id_column_of(contract)
    reference_data, recorded = _reference_data(settings, data.manifest, where)
    reference_ids = _id_text(reference_data.read([id_column])[id_column])
    holdout = _holdout_rows(data, contract)
    from_reference = _id_text(holdout[id_column]).isin(reference_ids).to_numpy(dtype=bool)
    recent = _holdout(RECENT, holdout[~from_reference], contract, where)
    reference_where = f"partition {recorded['partition']}"
    reference = _holdout(
        REFERENCE, _holdout_rows(reference_data, contract), contract, reference_where
    )
    about = {
        "partition": recorded["partition"],
        "model_version": recorded.get("model_version"),
        "data_sha256": recorded["data_sha256"],
        "recent_rows_from_reference": int(from_reference.sum()),
    }
    return recent, reference, about


def _logged(prefix: str, scored: dict[str, Any], metric: str) -> dict[str, float]:
    logged = {f"{prefix}holdout_{k}": v for k, v in scored["challenger"].items()}
    logged[f"{prefix}holdout_rows"] = float(scored["rows"])
    if scored["champion"] is not None:
        logged |= {
            f"{prefix}champion_holdout_{m}": scored["champion"][m] for m in scored["challenger"]
        }
        delta = f"{metric}_delta"
        logged |= {
            f"{prefix}{k}": v for k, v in scored["comparison"].items() if k.startswith(delta)
        }
    return logged


def run_evaluate(settings: Settings, partition_key: str, resamples: int) -> dict[str, Any]:
    """Score the challenger (and the champion, if any) on the partition's hold-out(s) with the
    task's metrics; log them to the training run as ``holdout_<metric>`` (and, for a served
    partition, ``recent_holdout_<metric>`` / ``reference_holdout_<metric>``)."""
    import mlflow

    contract = load_contract(settings.model_name)
    partition = Partition.of(settings.dataset_root, partition_key)
    trained = read_json(partition.result("train"), produced_by="train")
    data = PartitionFile.open(partition)
    manifest = data.manifest
    served = "served" in manifest
    where = str(partition.manifest)
    if served:
        recent, reference, about = _served_holdouts(settings, contract, data, where)
    else:
        recent = _holdout("partition's", _holdout_rows(data, contract), contract, where)

    client = connect()
    challenger = mlflow.pyfunc.load_model(trained["model_uri"])
    champion = _load_champion(client, settings, contract)
    challenger_outputs = _outputs(challenger, recent.features)
    scored = _score(contract, recent, challenger_outputs, champion, resamples)
    latency = single_row_latency_ms(challenger, recent.features.head(50))
    per_class = (
        per_class_metrics(recent.labels, challenger_outputs, contract.class_labels)
        if contract.task == "multiclass"
        else {}
    )
    metric = contract.primary_metric

    result: dict[str, Any] = {
        "partition": partition.key,
        "data_sha256": manifest["data_sha256"],
        "run_id": trained["run_id"],
        "model_uri": trained["model_uri"],
        "task": contract.task,
        "primary_metric": metric,
        "metrics": list(contract.metrics),
        "holdout_rows": recent.rows,
        "challenger": {**scored["challenger"], **latency},
        "challenger_per_class": per_class,
        "champion": scored["champion"],
        "comparison": scored["comparison"],
    }
    logged = {f"holdout_{k}": v for k, v in {**scored["challenger"], **per_class}.items()} | latency
    if scored["champion"] is not None:
        logged |= {f"champion_holdout_{m}": scored["champion"][m] for m in scored["challenger"]}
        logged |= {k: v for k, v in scored["comparison"].items() if k.startswith(f"{metric}_delta")}

    if served:
        on_reference = _score(
            contract, reference, _outputs(challenger, reference.features), champion, resamples
        )
        result["training_data"] = "served"
        result["served_window"] = manifest["served"].get("window")
        result["holdouts"] = {
            RECENT: {
                **scored,
                "rows_from_reference_excluded": about.pop("recent_rows_from_reference"),
            },
            REFERENCE: {**on_reference, **about},
        }
        logged |= _logged("recent_", scored, metric) | _logged("reference_", on_reference, metric)

    client.log_batch(
        trained["run_id"],
        metrics=[
            mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0)
            for k, v in logged.items()
        ],
    )
    write_json(partition.result("evaluate"), result)
    return result
