"""Data drift and prediction drift, judged by Evidently's own statistical tests.

Shared by monitoring (served rows against the champion's training data) and training (a new
partition against the champion's training partition), so both judge shift the same way.

The decision runs Evidently's per-column tests (the same registry, option resolution and NaN
handling as ``DataDriftPreset``) on *every* row of the window and of the reference: the common
ones (Wasserstein, PSI, Jensen-Shannon, KL, chi-square and the default choice) computed from each
side sorted or counted once (:mod:`mlops_steps.common.drift_stats`, Evidently's formulas, ~10x
faster at 10M rows), any other by Evidently's own implementation. The report people read is
Evidently's, on a bounded sample (:mod:`mlops_steps.common.drift_report`).

Scores are a test statistic whose direction depends on the method: a p-value (ks, chisquare, z,
...; drift when below the threshold) or a distance (wasserstein, jensenshannon, psi, ...; drift at
or above it). Evidently returns the verdict with the score, so nothing here re-derives it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.drift_stats import FAST_METHODS, Side, default_method, fast_test
from mlops_steps.core.errors import StepError
from mlops_steps.core.policies import DriftPolicy

SCORE_COLUMN = "score"
#: The served prediction judged for prediction drift, by task: a number (binary score, regression
#: value) or the predicted class (multiclass: the class mix).
PREDICTION_COLUMN = {"binary": "score", "multiclass": "class", "regression": "value"}


class AllNullFeature(StepError):
    """A feature holds no value at all (Evidently must never see such a column)."""


@dataclass(frozen=True)
class FeatureKind:
    """What the champion's feature spec says a feature holds, and whether it may be missing."""

    name: str
    kind: str  # integer | float | category | boolean
    nullable: bool = False

    @property
    def numeric(self) -> bool:
        """Integer and float features (a boolean is tested as two categories)."""
        return self.kind in ("integer", "float")

    @property
    def boolean(self) -> bool:
        return self.kind == "boolean"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # num | cat
    method: str
    method_name: str
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int


def _evidently_kind(spec: FeatureKind) -> str:
    return "num" if spec.numeric else "cat"


def _options(policy: DriftPolicy) -> Any:
    from evidently.legacy.options.data_drift import DataDriftOptions

    return DataDriftOptions(
        drift_share=policy.drift_share,
        all_features_stattest=policy.stattest,
        num_features_stattest=policy.num_stattest,
        cat_features_stattest=policy.cat_stattest,
        per_feature_stattest=dict(policy.per_column_stattest) or None,
        all_features_threshold=policy.threshold,
        per_feature_threshold=dict(policy.per_column_threshold) or None,
    )


def check_policy(
    policy: DriftPolicy, features: Mapping[str, FeatureKind], task: str = "binary"
) -> None:
    """Reject unknown methods, methods that do not apply to a column (the prediction column is
    categorical for a multiclass model), and unknown columns, before any data is read (the
    message lists what is available)."""
    from evidently.legacy.calculations.stattests.registry import (
        StatTestInvalidFeatureTypeError,
        StatTestNotFoundError,
        get_registered_stattest,
    )
    from evidently.legacy.core import ColumnType

    unknown = sorted(
        (set(policy.per_column_stattest) | set(policy.per_column_threshold)) - set(features)
    )
    if unknown:
        raise StepError(
            f"columns {unknown} are not features of the champion",
            subject="--column-stattest/--column-threshold",
            fix=f"use one of {sorted(features)}",
        )
    options = _options(policy)
    prediction_column = PREDICTION_COLUMN[task]
    prediction_type = ColumnType.Categorical if task == "multiclass" else ColumnType.Numerical
    checks = [
        (name, ColumnType(_evidently_kind(spec)), options.get_feature_stattest_func(
            name, _evidently_kind(spec)))
        for name, spec in features.items()
    ] + [(prediction_column, prediction_type, policy.prediction_stattest)]  # fmt: skip
    for column, kind, method in checks:
        if method is None:
            continue
        try:
            get_registered_stattest(method, kind)
        except (StatTestNotFoundError, StatTestInvalidFeatureTypeError) as exc:
            raise StepError(
                f"method {method!r} cannot test column {column!r}: {exc}",
                subject="--stattest/--num-stattest/--cat-stattest/--prediction-stattest",
                fix="pick a method registered for the column's type (see the list above)",
            ) from None


def _stattest(method: Any, column_type: Any, reference: Side, current: Side) -> Any:
    """The StatTest Evidently would run: the one named, or its default choice for the data."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest

    if method is not None:
        return get_registered_stattest(method, column_type)
    defaults = {
        "wasserstein": stattests.wasserstein_stat_test,
        "jensenshannon": stattests.jensenshannon_stat_test,
        "ks": stattests.ks_stat_test,
        "chisquare": stattests.chi_stat_test,
        "z": stattests.z_stat_test,
    }
    return defaults[default_method(reference, current)]


def column_drift(
    column: str,
    kind: str,
    reference: pd.Series,
    current: pd.Series,
    *,
    method: Any,
    threshold: Any,
) -> ColumnDrift:
    """One column's test on every row, cleaned exactly as Evidently cleans it (infinities and
    NaN dropped); computed by drift_stats where it can, else by Evidently itself."""
    from evidently.legacy.core import ColumnType

    # The enum, not its value: some tests branch on ``feature_type == ColumnType.Numerical``
    # (PSI bins a number column only then; with "num" it counts every distinct score instead).
    column_type = ColumnType(kind)
    sides = {
        "reference": Side.of(reference, kind == "num"),
        "current": Side.of(current, kind == "num"),
    }
    for side, values in sides.items():
        if not values.size:  # Evidently would raise (or crash) on it: refuse first, by name
            raise AllNullFeature(
                f"column {column!r} has no values in the {side} data",
                subject=column,
                fix="monitoring needs values on both sides",
            )
    ref, cur = sides["reference"], sides["current"]
    test = _stattest(method, column_type, ref, cur)
    actual = test.default_threshold if threshold is None else threshold
    fast = fast_test(test.name, ref, cur, actual) if test.name in FAST_METHODS else None
    if fast is not None:
        score, drifted = float(fast[0]), bool(fast[1])
    else:
        clean = [s.replace([-np.inf, np.inf], np.nan).dropna() for s in (reference, current)]
        result = test(clean[0], clean[1], column_type, actual)
        score, drifted = float(result.drift_score), bool(result.drifted)
    if not math.isfinite(score):
        raise StepError(
            f"the {test.display_name} of column {column!r} is {score} "
            "(a constant reference column?)",
            subject=column,
            fix=f"choose another method for it with --column-stattest {column}=<method>",
        )
    return ColumnDrift(
        column=column,
        kind=kind,
        method=test.name,
        method_name=test.display_name,
        score=score,
        threshold=float(actual),
        drifted=drifted,
        reference_rows=ref.size,
        current_rows=cur.size,
    )


def _all_null_drift(name: str, kind: str, reference: pd.Series, current: pd.Series) -> ColumnDrift:
    """A nullable feature with values on one side only: its distribution moved entirely to (or
    from) missing, which counts as drift without a test."""
    return ColumnDrift(
        column=name,
        kind=kind,
        method="all_null",
        method_name="values on one side only",
        score=1.0,
        threshold=0.0,
        drifted=True,
        reference_rows=int(reference.notna().sum()),
        current_rows=int(current.notna().sum()),
    )


def data_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Mapping[str, FeatureKind],
    policy: DriftPolicy,
) -> dict[str, Any]:
    """Per-column drift on every row, and the dataset verdict (share of drifted columns).

    A nullable feature is tested on its values; with values on one side only it has drifted,
    with values on neither it is not judged (``not_judged``) and leaves the share alone."""
    options = _options(policy)
    not_judged = []
    judged: list[tuple[str, str]] = []  # (name, kind) tested
    drifted_to_missing: dict[str, ColumnDrift] = {}
    for name, spec in features.items():
        kind = _evidently_kind(spec)
        if spec.nullable:
            has_ref, has_cur = reference[name].notna().any(), current[name].notna().any()
            if not (has_ref or has_cur):
                not_judged.append(name)
                continue
            if has_ref != has_cur:
                drifted_to_missing[name] = _all_null_drift(
                    name, kind, reference[name], current[name]
                )
                judged.append((name, kind))
                continue
        judged.append((name, kind))

    def test(name: str, kind: str) -> ColumnDrift:
        if name in drifted_to_missing:
            return drifted_to_missing[name]
        return column_drift(
            name,
            kind,
            reference[name],
            current[name],
            method=options.get_feature_stattest_func(name, kind),
            threshold=options.get_threshold(name, kind),
        )

    # Sorting and counting let go of the interpreter lock: columns go two at a time.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        columns = list(pool.map(lambda job: test(*job), judged))
    if not columns:
        raise AllNullFeature(
            f"no feature has values in the data ({', '.join(not_judged)})",
            subject="data drift",
            fix="monitoring needs values on both sides",
        )
    drifted = [c.column for c in columns if c.drifted]
    share = len(drifted) / len(columns)
    return {
        "detected": share >= policy.drift_share,
        "share": share,
        "drift_share_threshold": policy.drift_share,
        "drifted_columns": drifted,
        "columns": [asdict(c) for c in columns],
        "not_judged": not_judged,
    }


def prediction_drift(
    reference: np.ndarray | pd.Series,
    current: np.ndarray | pd.Series,
    policy: DriftPolicy,
    task: str = "binary",
) -> dict[str, Any]:
    """Served predictions against the champion's on its own hold-out: the score (binary), the
    value (regression), or the predicted class as a categorical column (multiclass)."""
    column = PREDICTION_COLUMN[task]
    if task == "multiclass":
        ref = pd.Series(reference, dtype="object").astype("category")
        cur = pd.Series(current, dtype="object").astype("category")
        kind = "cat"
    else:
        ref = pd.Series(reference, dtype="float64")
        cur = pd.Series(current, dtype="float64")
        kind = "num"
    result = column_drift(
        column,
        kind,
        ref,
        cur,
        method=policy.prediction_stattest,
        threshold=policy.prediction_threshold,
    )
    out: dict[str, Any] = {
        "column": column,
        "detected": result.drifted,
        "method": result.method,
        "method_name": result.method_name,
        "score": result.score,
        "threshold": result.threshold,
        "reference_rows": result.reference_rows,
        "current_rows": result.current_rows,
    }
    if task == "multiclass":
        out["reference_mix"] = _shares(ref)
        out["current_mix"] = _shares(cur)
    else:
        out["reference_mean"] = float(np.nanmean(ref.to_numpy()))
        out["current_mean"] = float(np.nanmean(cur.to_numpy()))
    return out


def _shares(values: pd.Series) -> dict[str, float]:
    """Each value's share (only the values present), by value spelled as text."""
    counts = values.value_counts(normalize=True)
    counts = counts[counts > 0]
    counts.index = counts.index.astype(str)
    counts = counts.groupby(level=0).sum().sort_index()
    return {str(k): round(float(v), 4) for k, v in counts.items()}
