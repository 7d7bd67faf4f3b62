"""Prediction logs written exactly as the service writes them (serving/mlops_serving/predlog.py:
one JSON line per prediction under <dir>/date=YYYY-MM-DD/predictions-<host>-<pid>.jsonl, or
Parquet files encoded by the service's own writer)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
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
    """The model's scores; categories as text (the generator gives ``category`` columns, the
    model's signature takes strings)."""
    inputs = frame.loc[:, list(FEATURE_NAMES)]
    lean = [c for c in inputs.columns if isinstance(inputs[c].dtype, pd.CategoricalDtype)]
    return np.asarray(model.predict(inputs.astype(dict.fromkeys(lean, object))), dtype=float)


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
    log_format: str = "jsonl",
) -> int:
    """Append one line per row, timestamps spread evenly over ``span`` from ``start``; rows go
    out in requests of ``batch`` rows (one request id, rows 0..batch-1) like /predict/batch.
    ``edit`` may change each line's features (to break the contract on purpose). Another
    model's lines: its ``features`` and ``id_column``; a multiclass model's line carries the
    predicted class (``classes``) beside its score (interface 3). ``log_format="parquet"``: the
    same rows through the service's Parquet writer (the spec's kinds declared, ``edit`` not
    supported), one file per day of the rows."""
    if log_format == "parquet":
        assert edit is None, "edit writes lines; a Parquet file is typed by the spec"
        return _write_parquet(directory, frame, scores, version=version, variant=variant,
                              start=start, span=span, batch=batch, host=host, features=features,
                              id_column=id_column, classes=classes)  # fmt: skip
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


def _write_parquet(
    directory: Path,
    frame: pd.DataFrame,
    scores: np.ndarray,
    *,
    version: str,
    variant: str,
    start: dt.datetime,
    span: dt.timedelta,
    batch: int,
    host: str,
    features: tuple[str, ...],
    id_column: str,
    classes: list[str] | None,
) -> int:
    """The rows of :func:`write_log` as requests to the service's PredictionLog (Parquet),
    each day's rows in a file under that day's directory (the service files by writing day)."""
    from types import SimpleNamespace

    from mlops_serving.predlog import PredictionLog

    contract = load_contract("churn")
    kinds = {f.name: f.kind for f in contract.features}
    records = frame.loc[:, list(features)].to_dict("records")
    records = [
        {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in records
    ]
    ids = [str(v) for v in frame[id_column]]
    step = span / max(len(frame), 1)
    days: dict[dt.date, list[int]] = {}
    for index in range(len(frame)):
        days.setdefault((start + step * index).date(), []).append(index)
    for day, rows in days.items():
        staging = directory / f".staging-{host}-{day}"
        log = PredictionLog(str(staging), log_format="parquet")
        log.declare(
            version, [SimpleNamespace(name=n, kind=kinds.get(n, "float")) for n in features]
        )
        for first in range(0, len(rows), batch):
            part = rows[first : first + batch]
            stamp = start + step * part[0]
            log.record(
                request_id=f"req-{host}-{part[0] // batch:07d}",
                entity_ids=[ids[i] for i in part],
                variant=variant,
                version=version,
                features=[records[i] for i in part],
                scores=np.array([np.nan if scores[i] is None else scores[i] for i in part], float),
                timestamp=stamp.timestamp(),
                classes=[classes[i] for i in part] if classes is not None else None,
            )
        log.flush()
        target = directory / f"date={day:%Y-%m-%d}"
        target.mkdir(parents=True, exist_ok=True)
        for path in staging.rglob("*.parquet"):
            path.rename(target / f"{host}-{path.name}")
        shutil.rmtree(staging)
    return len(frame)


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
