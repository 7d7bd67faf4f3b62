"""The model service's prediction log, read back for one time window (local directory or S3).

The service appends one JSON line per prediction (``serving/mlops_serving/predlog.py``): request_id,
row, entity_id, timestamp, variant, model_version, score (a multiclass model's line adds its
``class``) and the raw ``features`` object (a shadow copy's lines, variant ``shadow``, are
skipped: nobody was served them), under
``<log>/date=YYYY-MM-DD/`` where the date is the day the line was *written*: the day of the
prediction or, for a flush just after midnight, the next one. So a window reads the date
directories from its first day to the day after its last, skips files last written before the
window began (a line is never written before its own timestamp), and keeps the rows whose own
timestamp falls in ``[start, end)``. A file the service is still appending to may end in half a
line; reading stops at the last newline.

Fail closed: the checks here turn every way the log can be unusable (no rows, a feature that is
missing, extra, of the wrong type or null) into a named error, so monitoring never reports "no
drift" for data it could not read.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from mlops_steps.common.window import (
    AllNullFeature,
    EmptyWindow,
    FeatureKind,
    NullFeatureValues,
    SchemaMismatch,
    Window,
)
from mlops_steps.core.errors import StepError

#: Top-level fields every logged prediction carries (predlog writes all of them).
META_FIELDS = (
    "request_id", "row", "entity_id", "timestamp", "variant", "model_version", "score", "class",
)  # fmt: skip
_REQUIRED_META = ("timestamp", "model_version", "score", "features")
#: The service's shadow copies (serving/mlops_serving/shadow.py): logged, never served.
SHADOW_VARIANT = "shadow"
# Files (or S3 objects) last written this long before the window starts may still hold window
# rows when clocks disagree a little (service host, NFS server, S3); cheap insurance.
_CLOCK_SLACK = dt.timedelta(minutes=5)
_BLOCK_SIZE = 64 << 20  # one inference block for files up to 64 MB: types are judged file-wide
_S3_THREADS = 16
_TYPE_CHANGE = re.compile(r"Column\(/features/([^)]+)\) changed from (\w+) to (\w+)")


@dataclass
class ServedWindow:
    """The window's predictions: top-level fields in ``meta``, one column per feature."""

    meta: pd.DataFrame
    features: pd.DataFrame
    files_read: int = 0
    seen_features: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _LogFile:
    name: str  # path or s3:// URI, for messages
    read: Any  # () -> bytes


def _local_files(root: Path, window: Window) -> Iterator[_LogFile]:
    not_before = (window.start - _CLOCK_SLACK).timestamp()
    for day in window.days():
        directory = root / f"date={day:%Y-%m-%d}"
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.jsonl")):
            if path.stat().st_mtime >= not_before:
                yield _LogFile(str(path), path.read_bytes)


def _s3_files(uri: str, window: Window) -> Iterator[_LogFile]:
    import boto3
    import botocore.exceptions

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    client = boto3.client("s3")
    not_before = window.start - _CLOCK_SLACK
    try:
        for day in window.days():
            day_prefix = "/".join(p for p in (prefix, f"date={day:%Y-%m-%d}", "") if p)
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=day_prefix
            ):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(".jsonl") and obj["LastModified"] >= not_before:
                        key = obj["Key"]
                        yield _LogFile(
                            f"s3://{bucket}/{key}",
                            lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read(),
                        )
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise StepError(
            f"cannot list the prediction log ({exc})",
            subject=uri,
            fix="check MLOPS_PREDICTION_LOG and the S3 credentials (AWS_* / the mlops-s3 Secret)",
        ) from None


def _diagnose(name: str, data: bytes, features: Mapping[str, FeatureKind]) -> SchemaMismatch:
    """Find the first line that breaks the contract, when the fast reader refused the file."""
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            return SchemaMismatch(
                f"line {number} is not JSON ({exc.msg})",
                subject=name,
                fix="the log is written by the model service only; remove the foreign lines",
            )
        values = record.get("features") if isinstance(record, dict) else None
        if not isinstance(values, dict):
            return SchemaMismatch(
                f"line {number}: 'features' is not an object", subject=name, fix=_SPEC_FIX
            )
        for key, value in values.items():
            spec = features.get(key)
            if spec is not None and value is not None and not _json_fits(value, spec):
                return _wrong_type(name, key, spec, type(value).__name__, f"line {number}")
    return SchemaMismatch("could not be parsed as JSON lines", subject=name, fix=_SPEC_FIX)


_SPEC_FIX = (
    "the log must come from a service serving this model (same feature spec); "
    "check SERVING_MODEL_NAME and MLOPS_PREDICTION_LOG"
)


def _json_fits(value: Any, spec: FeatureKind) -> bool:
    """Whether a logged JSON value has the feature's kind (bools are not numbers here)."""
    if spec.boolean:
        return isinstance(value, bool) or value in (0, 1)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return is_number == spec.numeric


def _expected(spec: FeatureKind) -> str:
    if spec.boolean:
        return "true or false"
    return "a number" if spec.numeric else "a string"


def _wrong_type(
    name: str, column: str, spec: FeatureKind, found: str, where: str
) -> SchemaMismatch:
    expected = _expected(spec)
    return SchemaMismatch(
        f"{where}: feature {column!r} holds {found}, expected {expected} ({spec.kind} feature)",
        subject=name,
        fix=_SPEC_FIX,
    )


def _read_table(log_file: _LogFile, features: Mapping[str, FeatureKind]) -> Any:
    import pyarrow as pa
    import pyarrow.json as pa_json

    data = log_file.read()
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""  # drop a partial last line being written
    if not data.strip():
        return None
    try:
        return pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE)
        )
    except pa.ArrowInvalid as exc:
        match = _TYPE_CHANGE.search(str(exc))
        if match and match[1] in features:
            raise _wrong_type(
                log_file.name, match[1], features[match[1]], f"{match[2]}s and {match[3]}s", "rows"
            ) from None
        raise _diagnose(log_file.name, data, features) from None


def _frame(
    log_file: _LogFile, table: Any, window: Window, features: Mapping[str, FeatureKind]
) -> tuple[pd.DataFrame, pd.DataFrame, set[str]]:
    """One file's rows in the window: (meta, features, feature fields present in the file)."""
    import pyarrow as pa

    missing = [name for name in _REQUIRED_META if name not in table.column_names]
    if missing:
        raise SchemaMismatch(
            f"lines lack {', '.join(missing)}",
            subject=log_file.name,
            fix="the prediction log format is serving/mlops_serving/predlog.py's",
        )
    stamps = pd.to_datetime(
        table.column("timestamp").to_pandas(), format="ISO8601", utc=True, errors="coerce"
    )
    if stamps.isna().any():
        raise SchemaMismatch(
            f"{int(stamps.isna().sum())} lines have no valid ISO 8601 timestamp",
            subject=log_file.name,
            fix="the prediction log format is serving/mlops_serving/predlog.py's",
        )
    keep = ((stamps >= window.start) & (stamps < window.end)).to_numpy()
    if "variant" in table.column_names:  # shadow copies were scored, but nobody was served them
        keep &= (table.column("variant").to_pandas() != SHADOW_VARIANT).to_numpy()
    table = table.filter(pa.array(keep))
    struct = table.column("features").combine_chunks()
    if not pa.types.is_struct(struct.type):
        raise SchemaMismatch(
            f"'features' is {struct.type}, expected an object of feature values",
            subject=log_file.name,
            fix=_SPEC_FIX,
        )
    present = {struct.type.field(i).name for i in range(struct.type.num_fields)}
    extra = sorted(present - set(features))
    if extra:
        raise SchemaMismatch(
            f"logged features {extra} are not in the champion's feature spec",
            subject=log_file.name,
            fix=_SPEC_FIX,
        )
    columns: dict[str, Any] = {}
    for index in range(struct.type.num_fields):
        name = struct.type.field(index).name
        values = struct.field(index)
        spec = features[name]
        arrow_type = values.type
        if pa.types.is_null(arrow_type):
            columns[name] = np.full(len(values), np.nan) if spec.numeric else [None] * len(values)
        elif spec.boolean and (pa.types.is_boolean(arrow_type) or pa.types.is_integer(arrow_type)):
            columns[name] = values.to_pandas()  # checked and spelled true/false by check_features
        elif spec.numeric and (pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)):
            columns[name] = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        elif not spec.numeric and (pa.types.is_string(arrow_type)):
            columns[name] = values.to_pandas()
        else:
            raise _wrong_type(log_file.name, name, spec, str(arrow_type), "rows")
    rows = table.num_rows
    feature_frame = pd.DataFrame(
        {
            name: columns.get(name, np.full(rows, np.nan) if spec.numeric else [None] * rows)
            for name, spec in features.items()
        }
    )
    meta = pd.DataFrame(
        {
            name: (
                table.column(name).to_pandas()
                if name in table.column_names
                else pd.Series([None] * rows, dtype=object)
            )
            for name in META_FIELDS
            if name != "timestamp"
        }
    )
    meta["timestamp"] = stamps[keep].reset_index(drop=True)
    meta["model_version"] = meta["model_version"].astype(str)
    meta["score"] = pd.to_numeric(meta["score"], errors="coerce")
    meta["class"] = meta["class"].map(lambda v: None if v is None else str(v)).astype(object)
    return meta, feature_frame, present


def log_files(location: str, window: Window) -> list[_LogFile]:
    """The files (or objects) of the log that may hold rows of the window."""
    if location.startswith("s3://"):
        return list(_s3_files(location, window))
    root = Path(location.removeprefix("file://"))
    if not root.is_dir():
        raise EmptyWindow(
            "no prediction log directory",
            subject=str(root),
            fix="point MLOPS_PREDICTION_LOG at the service's SERVING_PREDICTION_LOG",
        )
    return list(_local_files(root, window))


def read_window(location: str, window: Window, features: Mapping[str, FeatureKind]) -> ServedWindow:
    """Every logged prediction in the window, checked against the feature spec."""
    files = log_files(location, window)
    threads = _S3_THREADS if location.startswith("s3://") else 1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        tables = list(pool.map(lambda f: (f, _read_table(f, features)), files))
    metas, frames, seen = [], [], set()
    for log_file, table in tables:
        if table is None:
            continue
        meta, frame, present = _frame(log_file, table, window, features)
        if len(meta):
            metas.append(meta)
            frames.append(frame)
            seen |= present
    if not metas:
        raise EmptyWindow(
            f"no predictions logged between {window.start.isoformat()} and "
            f"{window.end.isoformat()} ({len(files)} log files looked at)",
            subject=location,
            fix="check that the service is serving and writes SERVING_PREDICTION_LOG there; "
            "an empty window is never reported as 'no drift'",
        )
    return ServedWindow(
        meta=pd.concat(metas, ignore_index=True),
        features=pd.concat(frames, ignore_index=True),
        files_read=len(files),
        seen_features=seen,
    )


def boolean_text(column: pd.Series) -> pd.Series | None:
    """A boolean feature as the drift tests compare it: "true"/"false" (missing stays missing),
    from bools, 0/1 or the words; None when a value is none of those."""
    # 1 and 0 (and 1.0, 0.0) hash as True and False, so they find the same words.
    words: dict[Any, str] = {True: "true", False: "false", "true": "true", "false": "false"}

    def spell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        key = value.strip().lower() if isinstance(value, str) else value
        if hasattr(key, "item"):
            key = key.item()
        return words.get(key, "?")

    out = column.map(spell).astype(object)
    return None if (out == "?").any() else out


def check_features(
    frame: pd.DataFrame,
    features: Mapping[str, FeatureKind],
    *,
    source: str,
    max_null_share: float,
    seen: set[str] | None = None,
) -> pd.DataFrame:
    """Fail closed on a missing, wrong-typed or null feature; returns the frame in model order,
    numbers as float64, categories and booleans ("true"/"false") as ``category`` (what the drift
    tests expect). A nullable feature may be null in any share of the rows (data_drift judges
    what values it has); any other may be null in at most ``max_null_share`` of them."""
    absent = [name for name in features if name not in frame.columns or (
        seen is not None and name not in seen)]  # fmt: skip
    if absent:
        raise SchemaMismatch(
            f"features {absent} of the champion's feature spec are missing",
            subject=source,
            fix=_SPEC_FIX,
        )
    out: dict[str, pd.Series] = {}
    for name, spec in features.items():
        column = frame[name]
        if spec.boolean:
            spelled = boolean_text(column)
            if spelled is None:
                raise _wrong_type(source, name, spec, str(column.dtype), "column")
            column = spelled
        else:
            is_number = pd.api.types.is_numeric_dtype(column) and not (
                pd.api.types.is_bool_dtype(column)
            )
            if is_number != spec.numeric or (
                not spec.numeric and pd.api.types.is_bool_dtype(column)
            ):
                raise _wrong_type(source, name, spec, str(column.dtype), "column")
        if spec.numeric:
            column = column.astype("float64").replace([np.inf, -np.inf], np.nan)
        nulls = int(column.isna().sum())
        if not spec.nullable and nulls == len(column):
            raise AllNullFeature(
                f"feature {name!r} is null in all {len(column)} rows",
                subject=source,
                fix="the service or the reference data lost this feature; fix the producer "
                "before monitoring can judge drift",
            )
        if not spec.nullable and nulls > max_null_share * len(column):
            raise NullFeatureValues(
                f"feature {name!r} is null in {nulls} of {len(column)} rows "
                f"({nulls / len(column):.2%} > --max-null-share {max_null_share:.2%})",
                subject=source,
                fix="find why the producer logs nulls, or raise --max-null-share (or declare "
                "the feature nullable in the model's contract)",
            )
        out[name] = column if spec.numeric else column.astype("category")
    return pd.DataFrame(out)
