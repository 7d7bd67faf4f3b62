"""Delayed ground truth: the model's label landing place, read and joined to served predictions.

A landing place is a directory or an ``s3://bucket/prefix`` of CSV (``.csv``, ``.csv.gz``) and
Parquet files, each row one outcome: an id, the contract's label column and ``label_time`` (when
the outcome became known, ISO 8601; without it the file's modification time stands in, counted).
The id is ``request_id`` + ``row`` (one row of a batch request), ``request_id`` alone (single-row
requests only) or ``entity_id`` (the contract's id column as the service was given it); a file
uses the most specific one its columns allow.

Labels are validated against the contract like any input: class labels (binary, multiclass) or
numbers (regression); a file that breaks it is a :class:`LabelsError` naming the file. Nothing is
dropped silently: every row read is counted in exactly one of ``kept``, ``empty`` (no label
value), ``late`` (known after the cutoff: left for a later run, so a re-run sees the same labels)
and ``duplicates`` (an earlier label of the same id: the latest ``label_time`` wins, ties the
later file name, then the later row; ``conflicting`` counts those whose value differed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from mlops_steps.contract.model import ModelContract
from mlops_steps.core.errors import StepError

#: The id kinds a label file may carry, most specific first (the join tries them in this order).
LABEL_KEYS: tuple[tuple[str, ...], ...] = (("request_id", "row"), ("request_id",), ("entity_id",))
LABEL_SUFFIXES = (".csv", ".csv.gz", ".parquet")
COUNTS = ("rows_read", "empty", "late", "duplicates", "conflicting", "label_time_from_file", "kept")


class LabelsError(StepError):
    """The label landing place cannot be read, or a label file breaks the model's contract."""


@dataclass(frozen=True)
class LabelFile:
    """One file read: its name (path or s3:// URI), the sha256 of its bytes, rows, id columns."""

    name: str
    sha256: str
    rows: int
    keys: tuple[str, ...]


@dataclass
class LabelSet:
    """The labels kept per id kind, the files they came from and what happened to every row."""

    tables: dict[tuple[str, ...], pd.DataFrame]
    files: list[LabelFile]
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe provenance: every file (name, sha256, rows, keys) and the counts."""
        return {
            "files": [{**asdict(f), "keys": list(f.keys)} for f in self.files],
            "counts": {k: int(v) for k, v in self.counts.items()},
        }


@dataclass
class LabelJoin:
    """A label per served row where one is known, and how the join went."""

    labels: pd.Series
    joined_by: dict[str, int]
    matched: int
    unmatched_labels: int
    join_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "served_rows": len(self.labels),
            "matched": self.matched,
            "joined_by": dict(self.joined_by),
            "unmatched_labels": self.unmatched_labels,
            "join_rate": round(self.join_rate, 6),
        }


@dataclass(frozen=True)
class _RawFile:
    name: str
    modified: dt.datetime
    read: Any  # () -> bytes


def _key(value: Any) -> Any:
    """A label as the contract spells its classes ("1.0" and 1.0 are "1"); missing is None."""
    from mlops_steps.common.metrics import label_key

    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value.strip() or None
        return label_key(number) if number.is_integer() else value.strip()
    return label_key(value)


def parse_labels(values: pd.Series, contract: ModelContract, where: str) -> pd.Series:
    """Label values as the model's metrics compare them: binary 1.0 for the positive class else
    0.0, multiclass the class name, regression the number; missing stays missing."""
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


def _local_files(root: Path) -> Iterator[_RawFile]:
    if root.is_file():
        paths = [root] if root.name.endswith(LABEL_SUFFIXES) else []
    elif root.is_dir():
        paths = sorted(
            p for p in root.rglob("*") if p.is_file() and p.name.endswith(LABEL_SUFFIXES)
        )
    else:
        paths = []  # no labels have landed yet
    for path in paths:
        modified = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
        yield _RawFile(str(path), modified, path.read_bytes)


def _s3_files(uri: str) -> list[_RawFile]:
    import boto3
    import botocore.exceptions

    parsed = urlparse(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    client = boto3.client("s3")
    files = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith(LABEL_SUFFIXES):
                    files.append(_RawFile(
                        f"s3://{bucket}/{key}",
                        obj["LastModified"].astimezone(dt.UTC),
                        lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"].read(),
                    ))  # fmt: skip
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise LabelsError(
            f"cannot list the label landing place ({exc})",
            subject=uri,
            fix="check MLOPS_LABELS (or --labels) and the S3 credentials (AWS_* / the S3 Secret)",
        ) from None
    return sorted(files, key=lambda f: f.name)


def _read_bytes(raw: _RawFile) -> bytes:
    try:
        data: bytes = raw.read()
    except OSError as exc:
        raise LabelsError(f"cannot be read ({exc})", subject=raw.name) from None
    except Exception as exc:  # botocore's errors, without importing botocore for local reads
        raise LabelsError(
            f"cannot be read ({type(exc).__name__}: {exc})",
            subject=raw.name,
            fix="check the S3 credentials and that the object still exists",
        ) from None
    return data


def _parse_file(data: bytes, name: str) -> pd.DataFrame:
    try:
        if name.endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        compression = "gzip" if name.endswith(".gz") else None
        return pd.read_csv(io.BytesIO(data), dtype=str, compression=compression)
    except Exception as exc:  # pandas/pyarrow raise many kinds for a broken file
        raise LabelsError(
            f"is not a readable {'Parquet' if name.endswith('.parquet') else 'CSV'} file "
            f"({type(exc).__name__}: {exc})",
            subject=name,
            fix="write label files as CSV with a header row, or Parquet",
        ) from None


def _label_times(frame: pd.DataFrame, raw: _RawFile) -> tuple[pd.Series, int]:
    """Each row's label_time (UTC); missing ones take the file's modification time."""
    if "label_time" not in frame.columns:
        return pd.Series(pd.Timestamp(raw.modified), index=frame.index), len(frame)
    column = frame["label_time"]
    if pd.api.types.is_datetime64_any_dtype(column):
        times = pd.to_datetime(column, utc=True)
    else:
        given = column.notna() & (column.astype(str).str.strip() != "")
        times = pd.to_datetime(column.where(given), format="ISO8601", utc=True, errors="coerce")
        bad = given & times.isna()
        if bad.any():
            raise LabelsError(
                f"{int(bad.sum())} values of 'label_time' are not ISO 8601 times "
                f"(first: {column[bad].iloc[0]!r})",
                subject=raw.name,
                fix="write label_time like 2026-11-23T10:15:00+00:00, or leave it empty for "
                "the file's modification time",
            )
    missing = times.isna()
    return times.where(~missing, pd.Timestamp(raw.modified)), int(missing.sum())


def _key_columns(frame: pd.DataFrame, keys: tuple[str, ...], name: str) -> pd.DataFrame:
    """The id columns as the join compares them (strings; row as an integer's digits)."""
    out = pd.DataFrame(index=frame.index)
    for key in keys:
        column = frame[key]
        text = column.astype(str).str.strip().where(column.notna(), "")
        if key == "row":
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() | (numbers != numbers.round())
            if bad.any():
                raise LabelsError(
                    f"{int(bad.sum())} values of 'row' are not row numbers "
                    f"(first: {column[bad].iloc[0]!r})",
                    subject=name,
                    fix="row is the 0-based row of the batch request the prediction answered",
                )
            text = numbers.astype("int64").astype(str)
        if (text == "").any():
            raise LabelsError(
                f"{int((text == '').sum())} rows have no {key!r}",
                subject=name,
                fix=f"every label row names the prediction it belongs to ({', '.join(keys)})",
            )
        out[key] = text
    return out


def _read_file(raw: _RawFile, contract: ModelContract) -> tuple[LabelFile, pd.DataFrame, int]:
    """One file's rows as (key columns, label, label_time, _file, _line); and how many rows
    took the file's time."""
    data = _read_bytes(raw)
    frame = _parse_file(data, raw.name)
    label = contract.label
    keys = next((k for k in LABEL_KEYS if set(k) <= set(frame.columns)), None)
    if keys is None or label not in frame.columns:
        raise LabelsError(
            f"has columns {sorted(map(str, frame.columns))}; needs {label!r} and 'entity_id' "
            "or 'request_id' (optionally with 'row'), and may have 'label_time'",
            subject=raw.name,
            fix=f"write labels as entity_id,{label},label_time or "
            f"request_id,row,{label},label_time",
        )
    frame = frame.reset_index(drop=True)
    out = _key_columns(frame, keys, raw.name)
    out["label"] = parse_labels(frame[label], contract, raw.name)
    out["label_time"], from_file = _label_times(frame, raw)
    out["_file"], out["_line"] = raw.name, np.arange(len(frame))
    digest = hashlib.sha256(data).hexdigest()
    return LabelFile(raw.name, digest, len(frame), keys), out, from_file


def _latest(rows: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int, int]:
    """The latest label per id; how many were superseded and how many of those differed."""
    ordered = rows.sort_values(["label_time", "_file", "_line"], kind="stable")
    superseded = ordered.duplicated(subset=keys, keep="last")
    winners = ordered[~superseded]
    losers = ordered[superseded]
    conflicting = 0
    if len(losers):
        paired = losers[[*keys, "label"]].merge(
            winners[[*keys, "label"]], on=keys, suffixes=("", "_kept")
        )
        conflicting = int((paired["label"] != paired["label_kept"]).sum())
    return winners, int(superseded.sum()), conflicting


def _label_files(location: str) -> list[_RawFile]:
    """The label files of a landing place, ordered by name (a missing directory has none)."""
    if location.startswith("s3://"):
        return _s3_files(location)
    return list(_local_files(Path(location.removeprefix("file://"))))


def read_labels(
    location: str, contract: ModelContract, *, cutoff: dt.datetime | None = None
) -> LabelSet:
    """Every label file of ``location`` read, validated and reduced to the latest label per id
    known by ``cutoff`` (None: all of them); see the module docstring for the counts."""
    counts = dict.fromkeys(COUNTS, 0)
    files: list[LabelFile] = []
    parts: dict[tuple[str, ...], list[pd.DataFrame]] = {}
    for raw in _label_files(str(location)):
        info, rows, from_file = _read_file(raw, contract)
        files.append(info)
        counts["rows_read"] += info.rows
        counts["label_time_from_file"] += from_file
        empty = rows["label"].isna()
        late = ~empty & (rows["label_time"] > pd.Timestamp(cutoff) if cutoff is not None else False)
        counts["empty"] += int(empty.sum())
        counts["late"] += int(late.sum())
        parts.setdefault(info.keys, []).append(rows[~empty & ~late])
    tables: dict[tuple[str, ...], pd.DataFrame] = {}
    for keys in LABEL_KEYS:
        if keys not in parts:
            continue
        winners, superseded, conflicting = _latest(pd.concat(parts[keys]), list(keys))
        counts["duplicates"] += superseded
        counts["conflicting"] += conflicting
        tables[keys] = winners[[*keys, "label", "label_time"]].reset_index(drop=True)
    counts["kept"] = sum(len(t) for t in tables.values())
    return LabelSet(tables=tables, files=files, counts=counts)


def _served_keys(meta: pd.DataFrame) -> pd.DataFrame:
    """The served rows' ids as label files spell them; a missing id stays missing."""

    def text(column: pd.Series) -> pd.Series:
        return column.astype(str).str.strip().where(column.notna() & (column != ""))

    rows = pd.to_numeric(meta["row"], errors="coerce").astype("Int64")
    return pd.DataFrame(
        {
            "request_id": text(meta["request_id"]),
            "row": rows.astype(str).where(rows.notna()),
            "entity_id": text(meta["entity_id"]),
        },
        index=meta.index,
    )


def join_labels(meta: pd.DataFrame, labels: LabelSet, contract: ModelContract) -> LabelJoin:
    """A label per served row: by request id and row, then by request id (single-row requests
    only), then by entity id; a row keeps the first (most specific) label it gets."""
    dtype = object if contract.task == "multiclass" else "float64"
    missing = None if dtype is object else np.nan
    values = pd.Series(np.full(len(meta), missing, dtype=dtype))
    if not labels.tables:  # nothing to join: the rows' ids are not needed (nor read)
        return LabelJoin(
            labels=pd.Series(values.to_numpy(), index=meta.index, dtype=dtype),
            joined_by={},
            matched=0,
            unmatched_labels=0,
            join_rate=0.0,
        )
    served = _served_keys(meta).reset_index(drop=True).rename_axis("_position")
    single = served["request_id"].map(served["request_id"].value_counts()) == 1
    joined_by: dict[str, int] = {}
    unmatched = 0
    for keys, table in labels.tables.items():
        columns = list(keys)
        candidates = served if keys != ("request_id",) else served[single]
        candidates = candidates[columns].dropna()
        merged = candidates.reset_index().merge(table, on=columns, how="inner")
        hit = table[columns].merge(candidates.drop_duplicates(), on=columns)
        unmatched += len(table) - len(hit)
        found = merged.set_index("_position")["label"]
        fill = found[values.loc[found.index].isna().to_numpy()]
        values.loc[fill.index] = fill.to_numpy()
        joined_by["+".join(keys)] = len(fill)
    matched = int(values.notna().sum())
    return LabelJoin(
        labels=pd.Series(values.to_numpy(), index=meta.index, dtype=dtype),
        joined_by=joined_by,
        matched=matched,
        unmatched_labels=unmatched,
        join_rate=matched / len(meta) if len(meta) else 0.0,
    )
