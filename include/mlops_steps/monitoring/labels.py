"""Delayed ground truth: label files joined to served predictions, and the champion's performance
on the joined rows against its training-time hold-out metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.contract.schema import LABEL_COLUMN
from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import PerformancePolicy
from mlops_steps.monitoring.reference import Champion

LABEL_KEYS = (("request_id", "row"), ("request_id",), ("entity_id",))  # most specific first


_LABEL_SUFFIXES = (".csv", ".csv.gz", ".parquet")


class LabelsError(StepError):
    """A labels file breaks its contract (key columns, 0/1 label)."""


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
