"""The drift reports people read: Evidently's DataDriftPreset (features) and ValueDrift (the
task's prediction) on a bounded sample of each side, as HTML and JSON snapshots.

The decision is not taken here (:mod:`mlops_steps.common.drift` tests every row); the report
shows at most ``report_sample_rows`` rows per side (the full report costs ~38 s at 1M x 16 on
two cores) and says when it was sampled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.common.drift import PREDICTION_COLUMN, AllNullFeature, FeatureKind
from mlops_steps.core.policies import DriftPolicy


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
    # Rows first, then columns: selecting the columns of 10M rows first would copy them all.
    ref_sample = sample(reference, cap, seed).loc[:, list(shown)]
    cur_sample = sample(current, cap, seed).loc[:, list(shown)]
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
