"""Data drift and prediction drift, judged by Evidently's own statistical tests.

Shared by monitoring (served rows against the champion's training data) and training (a new
partition against the champion's training partition), so both judge shift the same way.

The decision runs Evidently's per-column tests (the same registry, option resolution and NaN
handling as ``DataDriftPreset``) on *every* row of the window and of the reference. The HTML and
JSON report is Evidently's ``DataDriftPreset`` on at most ``report_sample_rows`` rows per side: the
full report costs ~38 s at 1M x 16 on two cores, the tests alone ~2 s. Both are recorded, and the
report says when it was sampled.

Scores are a test statistic whose direction depends on the method: a p-value (ks, chisquare, z,
...; drift when below the threshold) or a distance (wasserstein, jensenshannon, psi, ...; drift at
or above it). Evidently returns the verdict with the score, so nothing here re-derives it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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


def column_drift(
    column: str,
    kind: str,
    reference: pd.Series,
    current: pd.Series,
    *,
    method: Any,
    threshold: Any,
) -> ColumnDrift:
    """One column's test, cleaned exactly as Evidently cleans it (infinities and NaN dropped)."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    # The enum, not its value: some tests branch on ``feature_type == ColumnType.Numerical``
    # (PSI bins a number column only then; with "num" it counts every distinct score instead).
    column_type = ColumnType(kind)
    ref = reference.replace([-np.inf, np.inf], np.nan).dropna()
    cur = current.replace([-np.inf, np.inf], np.nan).dropna()
    for side, values in (("reference", ref), ("current", cur)):
        if values.empty:  # Evidently would raise (or crash) on it: refuse first, by name
            raise AllNullFeature(
                f"column {column!r} has no values in the {side} data",
                subject=column,
                fix="monitoring needs values on both sides",
            )
    test = get_stattest(ref, cur, column_type, method)
    result = test(ref, cur, column_type, threshold)
    score = float(result.drift_score)
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
        threshold=float(result.actual_threshold),
        drifted=bool(result.drifted),
        reference_rows=len(ref),
        current_rows=len(cur),
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
    columns, not_judged = [], []
    for name, spec in features.items():
        kind = _evidently_kind(spec)
        if spec.nullable:
            has_ref, has_cur = reference[name].notna().any(), current[name].notna().any()
            if not (has_ref or has_cur):
                not_judged.append(name)
                continue
            if has_ref != has_cur:
                columns.append(_all_null_drift(name, kind, reference[name], current[name]))
                continue
        columns.append(
            column_drift(
                name,
                kind,
                reference[name],
                current[name],
                method=options.get_feature_stattest_func(name, kind),
                threshold=options.get_threshold(name, kind),
            )
        )
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
    counts = values.astype(str).value_counts(normalize=True).sort_index()
    return {str(k): round(float(v), 4) for k, v in counts.items()}


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def _dataset(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    for column in frame.columns:  # the report must never see an all-NaN column
        if frame[column].isna().all():
            raise AllNullFeature(
                f"column {column!r} is all null in the report sample",
                subject=column,
                fix="raise --report-sample-rows or fix the producer",
            )
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    return Dataset.from_pandas(frame, data_definition=definition)


def write_reports(
    directory: Path,
    *,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_scores: np.ndarray | pd.Series,
    current_scores: np.ndarray | pd.Series,
    features: Mapping[str, FeatureKind],
    policy: DriftPolicy,
    task: str = "binary",
) -> dict[str, Any]:
    """Evidently's DataDriftPreset (features) and ValueDrift (the task's prediction: score,
    value or class) as HTML + JSON snapshots. A feature null on either side (a nullable one,
    not judged or drifted to missing) is left out of the report: Evidently cannot show it."""
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    from mlops_steps.common.storage import atomic_write_bytes

    shown = {
        name: spec
        for name, spec in features.items()
        if reference[name].notna().any() and current[name].notna().any()
    }
    numeric = [name for name, spec in shown.items() if spec.numeric]
    categorical = [name for name, spec in shown.items() if not spec.numeric]
    cap, seed = policy.report_sample_rows, policy.seed
    ref_sample = sample(reference.loc[:, list(shown)], cap, seed)
    cur_sample = sample(current.loc[:, list(shown)], cap, seed)
    preset = DataDriftPreset(
        columns=list(shown),
        drift_share=policy.drift_share,
        method=policy.stattest,
        num_method=policy.num_stattest,
        cat_method=policy.cat_stattest,
        per_column_method={k: v for k, v in policy.per_column_stattest.items() if k in shown}
        or None,
        threshold=policy.threshold,
        per_column_threshold={k: v for k, v in policy.per_column_threshold.items() if k in shown}
        or None,
    )
    data_snapshot = Report([preset]).run(
        reference_data=_dataset(ref_sample, numeric, categorical),
        current_data=_dataset(cur_sample, numeric, categorical),
    )
    column = PREDICTION_COLUMN[task]
    dtype = "object" if task == "multiclass" else "float64"
    score_frames = [
        sample(pd.DataFrame({column: pd.Series(np.asarray(s), dtype=dtype)}), cap, seed)
        for s in (reference_scores, current_scores)
    ]
    kinds = ([], [column]) if task == "multiclass" else ([column], [])
    score_snapshot = Report(
        [
            ValueDrift(
                column=column,
                method=policy.prediction_stattest,
                threshold=policy.prediction_threshold,
            )
        ]
    ).run(
        reference_data=_dataset(score_frames[0], *kinds),
        current_data=_dataset(score_frames[1], *kinds),
    )
    paths = {
        "data_drift_html": directory / "data_drift.html",
        "data_drift_json": directory / "data_drift.json",
        "prediction_drift_html": directory / "prediction_drift.html",
        "prediction_drift_json": directory / "prediction_drift.json",
    }
    directory.mkdir(parents=True, exist_ok=True)
    for snapshot, stem in ((data_snapshot, "data_drift"), (score_snapshot, "prediction_drift")):
        tmp = directory / f".{stem}.html.tmp"
        snapshot.save_html(str(tmp))
        tmp.replace(paths[f"{stem}_html"])
        atomic_write_bytes(paths[f"{stem}_json"], snapshot.json().encode())
    return {
        **{name: str(path) for name, path in paths.items()},
        "sampled": len(ref_sample) < len(reference) or len(cur_sample) < len(current),
        "sample_rows": {"reference": len(ref_sample), "current": len(cur_sample)},
    }
