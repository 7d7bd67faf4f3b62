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
) -> int:
    """Append one line per row, timestamps spread evenly over ``span`` from ``start``; rows go
    out in requests of ``batch`` rows (one request id, rows 0..batch-1) like /predict/batch.
    ``edit`` may change each line's features (to break the contract on purpose)."""
    records = frame.loc[:, list(FEATURE_NAMES)].to_dict("records")
    step = span / max(len(frame), 1)
    written = 0
    handles: dict[Path, Any] = {}
    try:
        for index, (record, value) in enumerate(zip(records, scores, strict=True)):
            stamp = start + step * index
            request = index // batch
            features = {k: (v.item() if hasattr(v, "item") else v) for k, v in record.items()}
            if edit is not None:
                edit(features)
            line = {
                "request_id": f"req-{host}-{request:07d}",
                "timestamp": stamp.isoformat(),
                "variant": variant,
                "model_version": version,
                "row": index % batch,
                "entity_id": str(frame[ID_COLUMN].iloc[index]),
                "score": None if value is None else float(value),
                "features": features,
            }
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
