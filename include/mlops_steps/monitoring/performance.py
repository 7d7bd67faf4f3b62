"""The champion's performance on delayed ground truth: the labels that landed by the window's end
(common/labels.py) joined to the window's served rows, against its training-time hold-out metrics.

Performance is judged on the task's primary metric against the champion's
``mlops.holdout_<metric>`` tag: a 0..1 score (auc, accuracy, f1, macro_f1, r2) may drop by
``max_primary_drop``, a loss (log_loss, rmse, mae) may worsen by the share
``max_primary_relative_drop``; a classifier's accuracy is judged too (``max_accuracy_drop``). The
prediction log keeps a multiclass model's predicted class, not every class's probability, so its
log_loss cannot be measured there: macro_f1 stands in for it. Whether judged or not, the section
says what the labels were: files, rows read, late, duplicates, unmatched, the join rate.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.labels import LabelJoin, LabelSet, join_labels, read_labels
from mlops_steps.contract.model import ModelContract
from mlops_steps.core.policies import PerformancePolicy
from mlops_steps.monitoring.reference import Champion

#: Metrics on a 0..1 scale (an absolute drop bounds them); the others are unscaled losses.
SCORES_0_1 = ("auc", "accuracy", "f1", "macro_f1", "r2")
#: A multiclass primary metric the log cannot give (it needs every class's probability), and
#: the metric judged instead.
_LOGGED_INSTEAD = {"log_loss": "macro_f1"}


def label_summary(
    location: str, labels: LabelSet, join: LabelJoin, cutoff: dt.datetime | None
) -> dict[str, Any]:
    """What the window's labels were (JSON-safe): every label read is in one of kept, empty,
    late and duplicates; kept ones matched a served row or are counted unmatched."""
    return {
        "location": location,
        "cutoff": cutoff.isoformat() if cutoff else None,
        "files": len(labels.files),
        **labels.counts,
        "matched_rows": join.matched,
        "unmatched_labels": join.unmatched_labels,
        "join_rate": round(join.join_rate, 6),
        "joined_by": join.joined_by,
        "label_files": labels.to_dict()["files"],
    }


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
    location: str,
    policy: PerformancePolicy,
    contract: ModelContract,
    *,
    cutoff: dt.datetime | None,
    labels: LabelSet | None = None,
) -> dict[str, Any]:
    """The task's metrics on the labelled champion rows against its training-time hold-out
    metrics (see the module docstring). ``judged`` False gives the ``reason``; ``labels``
    always says what the labels known by ``cutoff`` were and how they joined. ``labels``: the
    labels already read from ``location`` (``meta`` then has ids only if there are any)."""
    if labels is None:
        labels = read_labels(location, contract, cutoff=cutoff)
    join = join_labels(meta, labels, contract)
    known = join.labels.notna().to_numpy()
    count = int(known.sum())
    section: dict[str, Any] = {
        "judged": False,
        "reason": None,
        "degraded": None,
        "task": contract.task,
        "primary_metric": contract.primary_metric,
        "labeled_rows": count,
        "joined_by": join.joined_by,
        "labels": label_summary(location, labels, join, cutoff),
    }

    def not_judged(reason: str) -> dict[str, Any]:
        return {**section, "reason": reason}

    if not labels.files:
        return not_judged(f"no label files in {location}")
    if count < policy.min_labeled_rows:
        return not_judged(
            f"{count} labelled rows in the window (< --min-labeled-rows "
            f"{policy.min_labeled_rows}); {len(labels.files)} label files read, "
            f"{labels.counts['late']} labels known only after {section['labels']['cutoff']}"
        )
    measured, why_not = _measure(
        contract, join.labels.to_numpy()[known], meta[known].reset_index(drop=True)
    )
    if measured is None:
        return not_judged(str(why_not))
    judged = _judged_metrics(contract)
    tags = {m: f"mlops.holdout_{m}" for m in judged}
    try:
        reference = {m: float(champion.tags[tag]) for m, tag in tags.items()}
    except (KeyError, ValueError):
        return not_judged(
            f"{champion.name} v{champion.version} has no {' / '.join(tags.values())} tags "
            "to compare with"
        )
    checks = {m: _drop(m, measured[m], reference[m], policy) for m in judged}
    return {
        **section,
        "judged": True,
        "judged_metrics": judged,
        **measured,
        **{f"reference_{m}": reference[m] for m in judged},
        **{f"{m}_drop": checks[m]["drop"] for m in judged},
        "limits": {m: {k: checks[m][k] for k in ("limit", "bound")} for m in judged},
        "degraded": any(c["degraded"] for c in checks.values()),
    }
