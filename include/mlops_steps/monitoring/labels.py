"""Delayed ground truth: label files joined to served predictions, and the champion's performance
on the joined rows against its training-time hold-out metrics.

The label column is the contract's ``label``; its values are the contract's classes (binary,
multiclass; a value outside them is refused) or numbers (regression). Performance is judged on
the task's primary metric against the champion's ``mlops.holdout_<metric>`` tag: a 0..1 score
(auc, accuracy, f1, macro_f1, r2) may drop by ``max_primary_drop``, a loss (log_loss, rmse, mae)
may worsen by the share ``max_primary_relative_drop``; a classifier's accuracy is judged too
(``max_accuracy_drop``). The prediction log keeps a multiclass model's predicted class, not every
class's probability, so its log_loss cannot be measured there: macro_f1 stands in for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import PerformancePolicy
from mlops_steps.monitoring.reference import Champion

LABEL_KEYS = (("request_id", "row"), ("request_id",), ("entity_id",))  # most specific first
#: Metrics on a 0..1 scale (an absolute drop bounds them); the others are unscaled losses.
SCORES_0_1 = ("auc", "accuracy", "f1", "macro_f1", "r2")
#: A multiclass primary metric the log cannot give (it needs every class's probability), and
#: the metric judged instead.
_LOGGED_INSTEAD = {"log_loss": "macro_f1"}

_LABEL_SUFFIXES = (".csv", ".csv.gz", ".parquet")


class LabelsError(StepError):
    """A labels file breaks its contract (key columns, label values of the model)."""


def _label_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(_LABEL_SUFFIXES))


def _key(value: Any) -> Any:
    """A label as the contract spells its classes ("1.0" and 1.0 are "1"); missing is None."""
    from mlops_steps.common.metrics import label_key

    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value.strip()
        return label_key(number) if number.is_integer() else value.strip()
    return label_key(value)


def parse_labels(values: pd.Series, contract: ModelContract, where: str) -> pd.Series:
    """Label values as performance compares them: binary 1.0 for the positive class else 0.0,
    multiclass the class name, regression the number; missing stays missing."""
    label = contract.label
    if contract.task == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values.notna() & (values.astype(str).str.strip() != "") & numbers.isna()
        if bad.any():
            raise LabelsError(
                f"{int(bad.sum())} values of {label!r} are not numbers "
                f"(first: {values[bad].iloc[0]!r})",
                subject=where,
                fix="write the observed value; leave unknown ones empty",
            )
        return numbers.astype("float64")
    keys = values.map(_key)
    bad = keys.notna() & ~keys.isin(contract.class_labels)
    if bad.any():
        raise LabelsError(
            f"{int(bad.sum())} values of {label!r} are not classes of model {contract.name} "
            f"({', '.join(contract.class_labels)}; first: {values[bad].iloc[0]!r})",
            subject=where,
            fix=f"labels are one of {', '.join(contract.class_labels)}; leave unknown ones empty",
        )
    if contract.task == "multiclass":
        return keys.astype(object)
    positive = _key(contract.positive_class)
    return keys.map(lambda k: None if k is None else float(k == positive)).astype("float64")


def _read_labels(path: Path, contract: ModelContract) -> tuple[tuple[str, ...], pd.DataFrame]:
    label = contract.label
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
    keys = next((k for k in LABEL_KEYS if set(k) <= set(frame.columns)), None)
    if keys is None or label not in frame.columns:
        raise LabelsError(
            f"has columns {sorted(frame.columns)}; needs {label!r} and 'entity_id' or "
            "'request_id' (optionally with 'row')",
            subject=str(path),
            fix=f"write labels as entity_id,{label} or request_id[,row],{label}",
        )
    out = pd.DataFrame({key: frame[key].astype(str) for key in keys})
    if "row" in keys:
        out["row"] = pd.to_numeric(frame["row"], errors="coerce").astype("Int64").astype(str)
    out[label] = parse_labels(frame[label], contract, str(path))
    return keys, out.dropna(subset=[label]).drop_duplicates(subset=list(keys), keep="last")


def join_labels(
    meta: pd.DataFrame, directory: Path, contract: ModelContract
) -> tuple[pd.Series, dict[str, Any]]:
    """A label per served row where one is known: by request id and row, by request id (for
    single-row requests), then by entity id; among files of one kind, the newest name wins."""
    files = _label_files(directory)
    labels = pd.Series([None] * len(meta), index=meta.index, dtype=object)
    info: dict[str, Any] = {"files": len(files), "joined_by": {}}
    if not files:
        return labels, info
    keyed = sorted(
        (_read_labels(path, contract) for path in reversed(files)),
        key=lambda kt: LABEL_KEYS.index(kt[0]),
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
        joined = joined.set_index("index")[contract.label]
        fill = joined[labels.loc[joined.index].isna().to_numpy()]
        labels.loc[fill.index] = fill.to_numpy()
        name = "+".join(keys)
        info["joined_by"][name] = info["joined_by"].get(name, 0) + len(fill)
    return labels, info


def _measure(
    contract: ModelContract, labels: np.ndarray, meta: pd.DataFrame
) -> tuple[dict[str, float] | None, str | None]:
    """The task's metrics that the logged predictions allow, or None and why not."""
    from mlops_steps.common.metrics import classification_metrics, regression_metrics

    if contract.task == "regression":
        return regression_metrics(labels.astype(float), meta["score"].to_numpy(float)), None
    if contract.task == "binary":
        y = labels.astype(int)
        if len(np.unique(y)) < 2:
            return None, f"the {len(y)} labelled rows hold one class only"
        return classification_metrics(y, meta["score"].to_numpy(float)), None
    from sklearn.metrics import accuracy_score, f1_score

    answered = meta["class"]
    if answered.isna().any():
        return None, (
            f"{int(answered.isna().sum())} labelled rows have no logged 'class' (a multiclass "
            "model's prediction log line carries it)"
        )
    y, predicted = labels.astype(str), answered.astype(str).to_numpy()
    present = sorted(set(y) | set(predicted))
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "macro_f1": float(f1_score(y, predicted, labels=present, average="macro", zero_division=0)),
    }, None


def _judged_metrics(contract: ModelContract) -> list[str]:
    primary = contract.primary_metric
    if contract.task == "multiclass":
        primary = _LOGGED_INSTEAD.get(primary, primary)
    extra = ["accuracy"] if contract.task != "regression" and primary != "accuracy" else []
    return [primary, *extra]


def _drop(
    metric: str, measured: float, reference: float, policy: PerformancePolicy
) -> dict[str, Any]:
    """How much worse than at training ``metric`` is, and the bound that applies to it."""
    from mlops_steps.contract.model import METRICS

    better_high = next(t[metric] for t in METRICS.values() if metric in t)
    drop = reference - measured if better_high else measured - reference
    if metric == "accuracy":
        bound, limit = "absolute", policy.max_accuracy_drop
    elif metric in SCORES_0_1:
        bound, limit = "absolute", policy.max_primary_drop
    else:
        bound = "relative"
        limit = policy.max_primary_relative_drop * abs(reference)
    return {"drop": drop, "limit": limit, "bound": bound, "degraded": bool(drop > limit)}


def performance(
    meta: pd.DataFrame,
    champion: Champion,
    directory: Path,
    policy: PerformancePolicy,
    contract: ModelContract,
) -> tuple[dict[str, Any] | None, str | None]:
    """The task's metrics on the labelled champion rows against its training-time hold-out
    metrics (see the module docstring), or ``None`` and the reason it cannot be judged."""
    labels, info = join_labels(meta, directory, contract)
    known = labels.notna().to_numpy()
    count = int(known.sum())
    if not info["files"]:
        return None, f"no label files in {directory}"
    if count < policy.min_labeled_rows:
        return None, (
            f"{count} labelled rows in the window (< --min-labeled-rows "
            f"{policy.min_labeled_rows}); {info['files']} label files read"
        )
    measured, why_not = _measure(
        contract, labels.to_numpy()[known], meta[known].reset_index(drop=True)
    )
    if measured is None:
        return None, why_not
    judged = _judged_metrics(contract)
    tags = {m: f"mlops.holdout_{m}" for m in judged}
    try:
        reference = {m: float(champion.tags[tag]) for m, tag in tags.items()}
    except (KeyError, ValueError):
        return None, (
            f"{champion.name} v{champion.version} has no {' / '.join(tags.values())} tags "
            "to compare with"
        )
    checks = {m: _drop(m, measured[m], reference[m], policy) for m in judged}
    return {
        "labeled_rows": count,
        "joined_by": info["joined_by"],
        "task": contract.task,
        "primary_metric": contract.primary_metric,
        "judged_metrics": judged,
        **measured,
        **{f"reference_{m}": reference[m] for m in judged},
        **{f"{m}_drop": checks[m]["drop"] for m in judged},
        "limits": {m: {k: checks[m][k] for k in ("limit", "bound")} for m in judged},
        "degraded": any(c["degraded"] for c in checks.values()),
    }, None
