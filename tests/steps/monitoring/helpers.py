"""Prediction logs written exactly as the service writes them (serving/mlops_serving/predlog.py:
one JSON line per prediction under <dir>/date=YYYY-MM-DD/predictions-<host>-<pid>.jsonl)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_steps.contract.loader import load_contract

CHURN = load_contract("churn")
FEATURE_NAMES, ID_COLUMN = CHURN.feature_names, str(CHURN.id_column)

#: Tests judge windows in the past, each its own hour (the window names the report directory
#: and the MLflow run, which a re-run of the same window reuses).
BASE = dt.datetime(2026, 11, 20, 0, 0, tzinfo=dt.UTC)


def window(hour: int) -> tuple[dt.datetime, dt.datetime]:
    start = BASE + dt.timedelta(hours=hour)
    return start, start + dt.timedelta(hours=1)


def score(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(frame.loc[:, list(FEATURE_NAMES)]), dtype=float)


def write_log(
    directory: Path,
    frame: pd.DataFrame,
    scores: np.ndarray,
    *,
    version: str = "1",
    variant: str = "stable",
    start: dt.datetime = BASE,
    span: dt.timedelta = dt.timedelta(minutes=59),
    batch: int = 1,
    host: str = "test-host",
    edit: Callable[[dict[str, Any]], None] | None = None,
    features: tuple[str, ...] = FEATURE_NAMES,
    id_column: str = ID_COLUMN,
    classes: list[str] | None = None,
) -> int:
    """Append one line per row, timestamps spread evenly over ``span`` from ``start``; rows go
    out in requests of ``batch`` rows (one request id, rows 0..batch-1) like /predict/batch.
    ``edit`` may change each line's features (to break the contract on purpose). Another
    model's lines: its ``features`` and ``id_column``; a multiclass model's line carries the
    predicted class (``classes``) beside its score (interface 3)."""
    records = frame.loc[:, list(features)].to_dict("records")
    step = span / max(len(frame), 1)
    written = 0
    handles: dict[Path, Any] = {}
    try:
        for index, (record, value) in enumerate(zip(records, scores, strict=True)):
            stamp = start + step * index
            request = index // batch
            values = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
            # A missing value is logged as JSON null (the service logs what it was sent).
            values = {k: (None if pd.isna(v) else v) for k, v in values.items()}
            if edit is not None:
                edit(values)
            line = {
                "request_id": f"req-{host}-{request:07d}",
                "timestamp": stamp.isoformat(),
                "variant": variant,
                "model_version": version,
                "row": index % batch,
                "entity_id": str(frame[id_column].iloc[index]),
                "score": None if value is None else float(value),
                "features": values,
            }
            if classes is not None:
                line["class"] = classes[index]
            path = directory / f"date={stamp:%Y-%m-%d}" / f"predictions-{host}-1.jsonl"
            if path not in handles:
                path.parent.mkdir(parents=True, exist_ok=True)
                handles[path] = path.open("a")
            handles[path].write(json.dumps(line) + "\n")
            written += 1
    finally:
        for handle in handles.values():
            handle.close()
    return written


def monitor_args(hour: int, log_dir: Path, labels: Path, *extra: str) -> list[str]:
    start, end = window(hour)
    return [
        "monitor",
        "--window-start", start.isoformat(),
        "--window-end", end.isoformat(),
        "--prediction-log", str(log_dir),
        "--labels", str(labels),
        *extra,
    ]  # fmt: skip
