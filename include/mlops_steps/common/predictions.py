"""The model service's prediction log, read back for one time window (local directory or S3).

The service logs every prediction as a JSON line or a Parquet row
(``serving/mlops_serving/predlog.py``, ``SERVING_PREDICTION_LOG_FORMAT``): request_id, row,
entity_id, timestamp, variant, model_version, score (a multiclass model's adds its ``class``)
and the ``features`` (a shadow copy's rows, variant ``shadow``, are skipped: nobody was served
them), under ``<log>/date=YYYY-MM-DD/`` where the date is the day the row was *written*: the
day of the prediction or, for a flush just after midnight, the next one. So a window reads the
date directories from its first day to the day after its last, skips files last written before
the window began (a row is never written before its own timestamp), and keeps the rows whose own
timestamp falls in ``[start, end)``. Both formats may sit side by side (a service switched from
one to the other); each file is read as its suffix says
(:mod:`mlops_steps.common.prediction_files`): Parquet only the columns asked for, a JSON lines
file up to its last newline (the service may be appending to it).

Fail closed: the checks here turn every way the log can be unusable (no rows, a feature that is
missing, extra, of the wrong type or null) into a named error, so monitoring never reports "no
drift" for data it could not read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from mlops_steps.common.prediction_files import (
    META_TYPES,
    SHADOW_VARIANT,
    SPEC_FIX,
    LogFile,
    feature_type,
    read_file,
    wrong_type,
)
from mlops_steps.common.window import (
    AllNullFeature,
    EmptyWindow,
    FeatureKind,
    NullFeatureValues,
    SchemaMismatch,
    Window,
)
from mlops_steps.core.errors import StepError

__all__ = ["SHADOW_VARIANT", "LogFile", "ServedWindow", "log_files", "read_window"]

#: Top-level fields every logged prediction carries (predlog writes all of them).
META_FIELDS = tuple(META_TYPES)
#: The file suffixes of the log, by format.
SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet"}
# Files (or S3 objects) last written this long before the window starts may still hold window
# rows when clocks disagree a little (service host, NFS server, S3); cheap insurance.
_CLOCK_SLACK = dt.timedelta(minutes=5)
_S3_THREADS = 16


@dataclass
class ServedWindow:
    """The window's predictions: top-level fields in ``meta``, one column per feature (numbers
    float64, categories text or ``category``), and the window's rows per (variant,
    model_version) -- all of them, also when only one version's rows were asked for."""

    meta: pd.DataFrame
    features: pd.DataFrame
    files_read: int = 0
    seen_features: set[str] = field(default_factory=set)
    by_version: dict[tuple[str, str], int] = field(default_factory=dict)


def _format_of(name: str) -> str | None:
    return next((f for suffix, f in SUFFIXES.items() if name.endswith(suffix)), None)


def _local_files(root: Path, window: Window) -> Iterator[LogFile]:
    not_before = (window.start - _CLOCK_SLACK).timestamp()
    for day in window.days():
        directory = root / f"date={day:%Y-%m-%d}"
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            kind = _format_of(path.name)  # a Parquet file being written is a hidden .tmp
            if kind and not path.name.startswith(".") and path.stat().st_mtime >= not_before:
                yield LogFile(str(path), path.read_bytes, kind, path)


def _s3_files(uri: str, window: Window) -> Iterator[LogFile]:
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
                    key = obj["Key"]
                    kind = _format_of(key)
                    if kind and obj["LastModified"] >= not_before:
                        yield LogFile(f"s3://{bucket}/{key}", _object_reader(client, bucket, key),
                                      kind)  # fmt: skip
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise StepError(
            f"cannot list the prediction log ({exc})",
            subject=uri,
            fix="check MLOPS_PREDICTION_LOG and the S3 credentials (AWS_* / the mlops-s3 Secret)",
        ) from None


def _object_reader(client: Any, bucket: str, key: str) -> Callable[[], bytes]:
    return lambda: bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def log_files(location: str, window: Window) -> list[LogFile]:
    """The files (or objects) of the log that may hold rows of the window, both formats."""
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


def log_provenance(location: str, window: Window) -> list[dict[str, Any]]:
    """Each log file a window reads: name, format, sha256 and rows of what a reader reads (a
    JSON lines file up to its last newline, a Parquet file whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for log_file in log_files(location, window):
        data = log_file.read()
        if log_file.format == "parquet":
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        else:
            data = data[: data.rfind(b"\n") + 1]
            rows = data.count(b"\n")
        digest = hashlib.sha256(data).hexdigest()
        out.append({"name": log_file.name, "format": log_file.format, "sha256": digest,
                    "rows": rows})  # fmt: skip
    return out


def _series(chunks: list[Any], arrow_type: Any, categorical: bool = False) -> Any:
    """Arrow chunks as what pandas holds (numbers as float64 numpy, NaN for null; categories
    as text, or as ``category`` of the values present, sorted, as ``astype`` would give)."""
    import pyarrow as pa

    arrays = [a for c in chunks for a in (c.chunks if isinstance(c, pa.ChunkedArray) else [c])]
    if pa.types.is_floating(arrow_type):  # one copy (ChunkedArray.to_numpy: ~100x slower)
        return pa.concat_arrays(arrays).to_numpy(zero_copy_only=False) if arrays else np.zeros(0)
    values = pa.chunked_array(arrays, type=arrow_type)
    if not pa.types.is_dictionary(arrow_type):
        return values.to_pandas()
    if not categorical:
        return values.cast(arrow_type.value_type).to_pandas()
    return _present_sorted(values.to_pandas())


def _present_sorted(series: pd.Series) -> pd.Series:
    """A categorical with only the categories its rows use, sorted (``astype("category")``'s)
    -- counted, not ``np.unique``'d: one pass over the codes."""
    codes = series.cat.codes.to_numpy()
    categories = series.cat.categories
    used = np.bincount(codes.astype(np.int64) + 1, minlength=len(categories) + 1)[1:] > 0
    order = [int(i) for i in np.argsort(np.asarray(categories, dtype=object)) if used[i]]
    recode = np.full(len(categories) + 1, -1, dtype=codes.dtype)  # the last: missing stays -1
    recode[order] = np.arange(len(order), dtype=codes.dtype)
    return pd.Series(pd.Categorical.from_codes(recode[codes], categories=categories[order]))


def read_window(
    location: str,
    window: Window,
    features: Mapping[str, FeatureKind],
    *,
    meta: Sequence[str] = META_FIELDS,
    only_version: str | None = None,
    categorical: bool = False,
) -> ServedWindow:
    """Every logged prediction in the window, checked against the feature spec; ``meta``: the
    top-level fields to return; ``only_version``: only that model version's rows (the counts
    per version still cover every row; with none of its rows the frames are empty);
    ``categorical``: category features as pandas ``category`` (a byte a row, what the drift
    tests take) instead of text. No row in the window at all: :class:`EmptyWindow`."""
    files = log_files(location, window)
    threads = _S3_THREADS if location.startswith("s3://") else 1
    meta = [name for name in META_FIELDS if name in meta]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        read = pool.map(lambda f: read_file(f, window, features, meta, only_version), files)
        parts = [part for part in read if part is not None]
    by_version: dict[tuple[str, str], int] = {}
    for part in parts:
        for key, count in part.by_version.items():
            by_version[key] = by_version.get(key, 0) + count
    parts = [part for part in parts if part.rows]
    if not by_version:
        raise EmptyWindow(
            f"no predictions logged between {window.start.isoformat()} and "
            f"{window.end.isoformat()} ({len(files)} log files looked at)",
            subject=location,
            fix="check that the service is serving and writes SERVING_PREDICTION_LOG there; "
            "an empty window is never reported as 'no drift'",
        )
    seen = set().union(*(part.present for part in parts))
    # Column by column, each file's chunk let go once converted: memory is the frames plus
    # one column, not the frames plus every Arrow table. (Only other versions' rows: empty.)
    names = [*meta, *(f"features.{name}" for name in features)]
    columns = {name: [c for part in parts for c in part.columns.pop(name)] for name in names}
    del parts
    meta_frame = pd.DataFrame(
        {name: _series(columns.pop(name), META_TYPES[name]) for name in meta}, copy=False
    )
    feature_frame = pd.DataFrame(
        {
            name: _series(columns.pop(f"features.{name}"), feature_type(spec), categorical)
            for name, spec in features.items()
        },
        copy=False,
    )
    return ServedWindow(
        meta=meta_frame,
        features=feature_frame,
        files_read=len(files),
        seen_features=seen,
        by_version=by_version,
    )


_WORDS: dict[Any, str] = {True: "true", False: "false", "true": "true", "false": "false"}


def _spell(value: Any) -> Any:
    """One value as "true"/"false", None when missing, "?" when it is neither."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    key = value.strip().lower() if isinstance(value, str) else value
    if hasattr(key, "item"):
        key = key.item()
    return _WORDS.get(key, "?")  # 1 and 0 (and 1.0, 0.0) hash as True and False


def boolean_text(column: pd.Series) -> pd.Series | None:
    """A boolean feature as the drift tests compare it: "true"/"false" (missing stays missing),
    from bools, 0/1 or the words; None when a value is none of those. Bools, numbers and
    categories are spelled at once (a category per word, not per row)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        words = [_spell(c) for c in column.cat.categories]
        codes = column.cat.codes.to_numpy()
        used = np.unique(codes[codes >= 0])
        if any(words[i] == "?" for i in used):
            return None
        lookup = np.array([{"false": 0, "true": 1}.get(w, -1) for w in words] + [-1])
        spelled = lookup[codes]  # code -1 (missing) picks the last entry: missing
    elif pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        if not np.isin(values[~missing], (0.0, 1.0)).all():
            return None
        spelled = np.where(missing, -1, values == 1.0)
    else:
        out = column.map(_spell).astype(object)
        return None if (out == "?").any() else out
    categorical = pd.Categorical.from_codes(spelled.astype("int8"), categories=["false", "true"])
    return pd.Series(categorical, index=column.index, name=column.name)


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
            fix=SPEC_FIX,
        )
    out: dict[str, pd.Series] = {}
    for name, spec in features.items():
        column = frame[name]
        if spec.boolean:
            spelled = boolean_text(column)
            if spelled is None:
                raise wrong_type(source, name, spec, str(column.dtype), "column")
            column = spelled
        else:
            is_number = pd.api.types.is_numeric_dtype(column) and not (
                pd.api.types.is_bool_dtype(column)
            )
            if is_number != spec.numeric or (
                not spec.numeric and pd.api.types.is_bool_dtype(column)
            ):
                raise wrong_type(source, name, spec, str(column.dtype), "column")
        if spec.numeric:  # float64 without infinities, copied only when it must change
            values = column.to_numpy(dtype="float64", na_value=np.nan)
            infinite = np.isinf(values)
            if infinite.any():
                values = np.where(infinite, np.nan, values)
            column = pd.Series(values, index=column.index, name=name, copy=False)
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
    return pd.DataFrame(out, copy=False)
